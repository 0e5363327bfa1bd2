"""Fine-tuning after pruning: distil the original scene into the pruned one (+ compensation net).

There are no training photos in a ``.ply``, so the teacher is the ORIGINAL unpruned scene: it is
rendered once per training view (no grad, cached) and the pruned Gaussians - plus, optionally, K
extra per-Gaussian feature channels and the :class:`CompensationNet` that turns
``concat(rendered rgb, rendered features)`` into the final RGB - are optimised to reproduce those
renders with the 3DGS loss ``0.8 L1 + 0.2 (1 - SSIM)``. Held-out views (``split_views``) are only
used for evaluation. With ``images=`` (photos keyed by camera name) the photos are the targets.

Per-parameter Adam learning rates follow 3DGS (means scaled by the scene extent and decayed
exponentially, SH rest at DC / 20, ...); the net has its own rate with a cosine decay.

Quantisation consistency (``quantise_aware``):

* ``"decode"`` (default): after the joint phase the Gaussians are encoded and decoded with the
  codec (exactly what the bundle will hold), the decoded scene is rendered once per training view
  and the net alone is fine-tuned for ``polish_iterations`` on those cached renders.
* ``"ste"``: the last ``ste_fraction`` of the joint phase renders the codec-quantised values with a
  straight-through estimator (gradients pass to the float parameters; the quantised offsets are
  refreshed every ``ste_refresh`` iterations), then the same net-only polish.
* ``"none"``: neither.

Continuous pruning (``prune_schedule``, :mod:`.schedule`): start from ``pruned`` (typically the
unpruned scene) and shrink it to ``target_count`` during the first part of the run with the
spectral selector + merge applied to the current parameters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SundaeError
from ..gaussians import GaussianSet, normalize_quats
from ..progress import Progress, info
from .schedule import PruneSchedule
from .unet import CompensationNet

#: 3DGS-style Adam learning rates (means are multiplied by the scene extent).
DEFAULT_LRS: Dict[str, float] = {
    "means": 1.6e-4,
    "means_final": 1.6e-6,
    "sh_dc": 2.5e-3,
    "sh_rest": 2.5e-3 / 20,
    "opacities": 2.5e-2,
    "scales": 5e-3,
    "quats": 1e-3,
    "features": 2.5e-3,
    "net": 1e-3,
    "net_final": 1e-4,
}

#: CPU defaults, sized so one shared scene fine-tunes in a few minutes on 2 cores.
CPU_DEFAULTS = {"iterations": 300, "resolution": 224, "views": 24, "polish_iterations": 150}
#: CUDA defaults.
GPU_DEFAULTS = {"iterations": 3000, "resolution": 800, "views": 96, "polish_iterations": 1000}

QUANTISE_MODES = ("decode", "ste", "none")
HISTORY_KEYS = ("iteration", "test_psnr", "loss", "seconds", "count")


# ------------------------------------------------------------------------------------------------
# result

@dataclass
class FinetuneResult:
    gaussians: GaussianSet                 # fine-tuned (float) Gaussians, .features when K > 0
    net: Optional[CompensationNet]
    history: Dict[str, List[float]]
    test_cameras: list
    train_cameras: list = field(default_factory=list)
    num_features: int = 0
    config: Dict[str, Any] = field(default_factory=dict)
    stats: Dict[str, Any] = field(default_factory=dict)

    def net_meta(self) -> Dict[str, Any]:
        """What a reader needs to run the exported net (stored next to the ONNX bytes)."""
        if self.net is None:
            return {}
        return {"arch": "unet", **self.net.config(), "num_features": self.num_features,
                "input": "rgb+features", "output": "rgb", "clamp": [0.0, 1.0],
                "onnx_input": "features", "onnx_output": "rgb"}

    def postprocess(self) -> Callable:
        """Render output -> final RGB with this result's torch net (see :func:`make_postprocess`)."""
        return make_postprocess(self.net, self.num_features)

    def summary(self) -> Dict[str, Any]:
        """JSON-able digest: iterations, counts, PSNRs and seconds."""
        h = self.history
        out = {k: self.config.get(k) for k in ("iterations", "resolution", "features", "net",
                                               "quantise_aware", "prune_schedule", "device")}
        out.update(self.stats)
        if h.get("test_psnr"):
            out["test_psnr_start"] = h["test_psnr"][0]
            out["test_psnr_end"] = h["test_psnr"][-1]
        if self.net is not None:
            out["net_params"] = self.net.num_params()
        return out


# ------------------------------------------------------------------------------------------------
# helpers

def _resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _train_size(cam, resolution) -> Tuple[int, int]:
    """(W, H) for ``resolution``: None (camera's own), int (long side) or (W, H)."""
    if resolution is None:
        return cam.width, cam.height
    if isinstance(resolution, (tuple, list)):
        return int(resolution[0]), int(resolution[1])
    long_side = int(resolution)
    s = long_side / max(cam.width, cam.height)
    return max(1, int(round(cam.width * s))), max(1, int(round(cam.height * s)))


def _to_image(img, w: int, h: int, device) -> torch.Tensor:
    """Photo (H, W, 3 or 4; uint8 or float) -> float (h, w, 3) in [0, 1] on ``device``."""
    t = torch.as_tensor(np.asarray(img))
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if t.ndim != 3 or t.shape[2] < 3:
        raise SundaeError(f"training image must be (H, W, 3), got shape {tuple(t.shape)}")
    t = t[..., :3]
    if t.shape[0] != h or t.shape[1] != w:
        t = F.interpolate(t.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
    return t.clamp(0, 1).to(device)


def _scene_extent(cams) -> float:
    pos = np.stack([c.position for c in cams])
    return float(max(1.1 * np.linalg.norm(pos - pos.mean(0), axis=1).max(), 1e-6))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def _loss(pred: torch.Tensor, target: torch.Tensor, ssim_fn) -> torch.Tensor:
    l1 = (pred - target).abs().mean()
    return 0.8 * l1 + 0.2 * (1.0 - ssim_fn(pred, target))


def _net_input(rgb: torch.Tensor, feats: Optional[torch.Tensor]) -> torch.Tensor:
    x = rgb if feats is None else torch.cat([rgb, feats], -1)
    return x.permute(2, 0, 1).unsqueeze(0)


def make_postprocess(net, num_features: int = 0, clamp: bool = True) -> Callable:
    """Build ``post(render_output) -> (H, W, 3)`` applying the compensation net.

    ``net`` is a :class:`CompensationNet`, an :class:`~.onnx_io.OnnxCompensator` or None
    (identity). The net input is ``concat(output.rgb, output.features[..., :num_features])``.
    """
    k = int(num_features)

    def post(out) -> torch.Tensor:
        rgb = out.rgb
        if net is None:
            y = rgb
        else:
            if k > 0:
                if out.features is None or out.features.shape[-1] < k:
                    raise SundaeError(f"the compensation net needs {k} rendered feature channels")
                x = torch.cat([rgb, out.features[..., :k]], -1)
            else:
                x = rgb
            if isinstance(net, torch.nn.Module):
                dev = next(net.parameters()).device
                with torch.no_grad():
                    y = net.apply_image(x.detach().to(dev).float()).to(rgb.device)
            else:
                y = net(x.detach())
        return y.clamp(0.0, 1.0) if clamp else y

    return post


class _Params:
    """The trainable Gaussian tensors (SH split into DC and rest for separate learning rates)."""

    def __init__(self, gs: GaussianSet, k: int, device):
        t = gs.to_torch(device=device)
        self.means = t["means"].clone().requires_grad_(True)
        self.quats = t["quats"].clone().requires_grad_(True)
        self.scales = t["scales"].clone().requires_grad_(True)
        self.opacities = t["opacities"].clone().requires_grad_(True)
        self.sh_dc = t["sh"][:, :1].clone().requires_grad_(True)
        self.sh_rest = t["sh"][:, 1:].clone().requires_grad_(True) if gs.sh.shape[1] > 1 else None
        self.features = None
        if k > 0:
            if gs.features is not None and gs.num_features == k:
                f = t["features"].clone()
            else:
                f = torch.zeros(len(gs), k, device=device)
            self.features = f.requires_grad_(True)

    def __len__(self):
        return self.means.shape[0]

    def groups(self, lrs: Dict[str, float], extent: float) -> List[dict]:
        g = [{"params": [self.means], "lr": lrs["means"] * extent, "name": "means"},
             {"params": [self.quats], "lr": lrs["quats"], "name": "quats"},
             {"params": [self.scales], "lr": lrs["scales"], "name": "scales"},
             {"params": [self.opacities], "lr": lrs["opacities"], "name": "opacities"},
             {"params": [self.sh_dc], "lr": lrs["sh_dc"], "name": "sh_dc"}]
        if self.sh_rest is not None:
            g.append({"params": [self.sh_rest], "lr": lrs["sh_rest"], "name": "sh_rest"})
        if self.features is not None:
            g.append({"params": [self.features], "lr": lrs["features"], "name": "features"})
        return g

    def tensors(self) -> Dict[str, torch.Tensor]:
        sh = self.sh_dc if self.sh_rest is None else torch.cat([self.sh_dc, self.sh_rest], 1)
        return {"means": self.means, "quats": self.quats, "scales": self.scales,
                "opacities": self.opacities, "sh": sh, "features": self.features}

    def to_gaussians(self, meta=None) -> GaussianSet:
        return GaussianSet.from_torch({k: v for k, v in self.tensors().items()}, meta=meta)


class _STE:
    """Straight-through fake quantisation with the real codec: forward uses decode(encode(p))."""

    def __init__(self, settings):
        self.settings = settings
        self.offsets: Optional[Dict[str, torch.Tensor]] = None

    def refresh(self, params: _Params, meta) -> None:
        gs = params.to_gaussians(meta)
        q = _codec_roundtrip(gs, self.settings, keep_order=True)
        dev = params.means.device
        cur = params.tensors()
        qt = q.to_torch(device=dev)
        self.offsets = {k: (qt[k] - cur[k].detach()) for k in cur if cur[k] is not None}

    def apply(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if self.offsets is None:
            return tensors
        return {k: (v if v is None else v + self.offsets[k]) for k, v in tensors.items()}


def _codec_roundtrip(gs: GaussianSet, settings=None, keep_order: bool = False) -> GaussianSet:
    """What the bundle stores: decode(encode(gs)); rows back in ``gs`` order if ``keep_order``."""
    from ..codec import decode_gaussians, encode_gaussians, morton_sort

    sections, meta = encode_gaussians(gs, settings)
    dec = decode_gaussians(sections, meta)
    if keep_order:
        _, order = morton_sort(gs, settings)
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        dec = dec.subset(inv)
    return dec.replace(meta=dict(gs.meta))


def _prune_params(params: _Params, count: int, method: str, gamma: float, merge, seed: int,
                  k: int, device, meta) -> _Params:
    from ..prune.merge import prune

    gs = params.to_gaussians(meta)
    pruned = prune(gs, int(count), method=method, gamma=gamma,
                   merge=None if merge in (None, "none", False) else merge, seed=seed)
    return _Params(pruned, k, device)


def _make_cameras(original: GaussianSet, cameras, resolution, views: int, seed: int, holdout_every: int):
    from ..render.cameras import generate_cameras, split_views

    if cameras is None:
        if isinstance(resolution, (tuple, list)):
            w, h = int(resolution[0]), int(resolution[1])
        else:
            w = int(resolution or 256)
            h = max(1, int(round(w * 3 / 4)))
        cameras = generate_cameras(original, views, w, h, seed=seed)
    cams = [c.scaled(*_train_size(c, resolution)) for c in cameras]
    if len(cams) < 2:
        raise SundaeError("fine-tuning needs at least 2 camera views (one is held out)")
    return split_views(cams, holdout_every=holdout_every)


# ------------------------------------------------------------------------------------------------
# the training loop

def finetune(original: GaussianSet, pruned: GaussianSet, *, cameras: Optional[Sequence] = None,
             images: Optional[Dict[str, Any]] = None, iterations: Optional[int] = None,
             resolution: Union[None, int, Tuple[int, int]] = None, views: Optional[int] = None,
             holdout_every: int = 8, features: int = 0, net: Union[bool, CompensationNet] = True,
             net_width: int = 4, net_levels: int = 4, net_max_width: int = 8,
             lrs: Optional[Dict[str, float]] = None,
             seed: int = 0, device="auto", backend: str = "auto",
             prune_schedule: Union[None, str, PruneSchedule] = None, target_count: Optional[int] = None,
             method: str = "spectral", gamma: float = 0.5, merge: Optional[str] = "assign",
             eval_every: Optional[int] = None, quantise_aware: str = "decode", codec_settings=None,
             polish_iterations: Optional[int] = None, ste_fraction: float = 0.3, ste_refresh: int = 10,
             background=(0.0, 0.0, 0.0), threads: Optional[int] = None,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune ``pruned`` (and a compensation net) to reproduce ``original``; see module doc.

    ``resolution``: long side (int) or (W, H) of the training renders; ``views``: number of
    generated cameras when ``cameras`` is None; ``features``: K extra learned channels per
    Gaussian; ``net``: train a :class:`CompensationNet` (or pass one). The default net is small
    (width 4, max width 8, ~10k parameters, ~22 KB stored as fp16 ONNX): distilling from the scene
    itself, wider nets added <= 0.1 dB over fine-tuning alone while a width-8 net (78 KB) outweighed
    a 10 % donut's Gaussians (62 KB; benchmarks/results/finetune.md); ``prune_schedule``:
    ``"every=N,share=S"`` continuous pruning down to ``target_count``; ``threads``: torch CPU
    threads for the run (restored afterwards; 1 is often fastest on a busy machine).
    """
    if threads is None:
        return _finetune(original, pruned, **{k_: v for k_, v in locals().items()
                                               if k_ not in ("original", "pruned", "threads")})
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _finetune(original, pruned, **{k_: v for k_, v in locals().items()
                                               if k_ not in ("original", "pruned", "threads", "old")})
    finally:
        torch.set_num_threads(old)


def _finetune(original, pruned, *, cameras, images, iterations, resolution, views, holdout_every, features,
              net, net_width, net_levels, net_max_width, lrs, seed, device, backend, prune_schedule,
              target_count, method, gamma, merge, eval_every, quantise_aware, codec_settings, polish_iterations, ste_fraction,
              ste_refresh, background, progress) -> FinetuneResult:
    from ..metrics import ssim as ssim_fn
    from ..render import render

    t_start = time.perf_counter()
    dev = _resolve_device(device)
    defaults = GPU_DEFAULTS if dev.type == "cuda" else CPU_DEFAULTS
    iterations = int(defaults["iterations"] if iterations is None else iterations)
    if resolution is None and cameras is None:
        resolution = defaults["resolution"]
    elif resolution is None:
        resolution = min(defaults["resolution"], max(cameras[0].width, cameras[0].height))
    views = int(defaults["views"] if views is None else views)
    polish_iterations = int(defaults["polish_iterations"] if polish_iterations is None else polish_iterations)
    if quantise_aware in (None, False):
        quantise_aware = "none"
    if quantise_aware not in QUANTISE_MODES:
        raise SundaeError(f"quantise_aware must be one of {', '.join(QUANTISE_MODES)}, got {quantise_aware!r}")
    k = int(features)
    if k < 0:
        raise SundaeError(f"features must be >= 0, got {k}")
    if k > 0 and not net:
        raise SundaeError("feature channels need the compensation net (features > 0 requires net)")
    if len(pruned) == 0:
        raise SundaeError("nothing to fine-tune: the pruned scene is empty")
    lr = dict(DEFAULT_LRS)
    lr.update(lrs or {})
    schedule = PruneSchedule.parse(prune_schedule)
    if schedule is not None and target_count is None:
        raise SundaeError("continuous pruning needs target_count")
    events = schedule.plan(len(pruned), int(target_count), iterations) if schedule else []
    if schedule is None and target_count is not None and len(pruned) != int(target_count):
        # plain fine-tuning of an already pruned scene: the budget is what was passed
        target_count = len(pruned)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bg = torch.tensor(background, dtype=torch.float32, device=dev)
    render_kw = dict(background=bg, backend=backend)

    # -- views and targets ------------------------------------------------------------------
    if images is not None:
        if cameras is None:
            raise SundaeError("training images need their cameras (cameras=...)")
        cameras = [c for c in cameras if c.name in images]
        if len(cameras) < 2:
            raise SundaeError("fewer than 2 cameras have a matching training image")
    train_cams, test_cams = _make_cameras(original, cameras, resolution, views, seed, holdout_every)
    if not test_cams:
        test_cams = train_cams[-1:]
    orig_t = original.to_torch(device=dev)

    def target(cam):
        if images is not None:
            return _to_image(images[cam.name], cam.width, cam.height, dev)
        with torch.no_grad():
            return render(orig_t, cam, **render_kw).rgb.clamp(0, 1)

    t0 = time.perf_counter()
    with Progress(len(train_cams) + len(test_cams), "rendering teacher views", log_every=10, enabled=progress) as bar:
        train_targets, test_targets = [], []
        for cam in train_cams:
            train_targets.append(target(cam))
            bar.update()
        for cam in test_cams:
            test_targets.append(target(cam))
            bar.update()
    t_teacher = time.perf_counter() - t0
    del orig_t

    # -- parameters, net, optimisers ------------------------------------------------------------
    params = _Params(pruned, k, dev)
    meta = dict(pruned.meta)
    extent = _scene_extent(train_cams + test_cams)
    cnet: Optional[CompensationNet] = None
    if isinstance(net, CompensationNet):
        cnet = net.to(dev)
        if cnet.in_channels != 3 + k:
            raise SundaeError(f"the given net takes {cnet.in_channels} channels, expected {3 + k}")
    elif net:
        cnet = CompensationNet(3 + k, width=net_width, levels=net_levels, max_width=net_max_width).to(dev)
    gopt = torch.optim.Adam(params.groups(lr, extent), eps=1e-15)
    nopt = torch.optim.Adam(cnet.parameters(), lr=lr["net"]) if cnet is not None else None

    def forward(cam, tensors, train_net=True):
        out = render({k_: v for k_, v in tensors.items() if k_ != "features"}, cam,
                     features=tensors["features"], **render_kw)
        if cnet is None:
            return out.rgb, out
        pred = cnet(_net_input(out.rgb, out.features))[0].permute(1, 2, 0)
        return pred, out

    def evaluate(tensors=None) -> float:
        tensors = tensors or params.tensors()
        vals = []
        was = cnet.training if cnet is not None else False
        if cnet is not None:
            cnet.eval()
        with torch.no_grad():
            for cam, ref in zip(test_cams, test_targets):
                pred, _ = forward(cam, {k_: (None if v is None else v.detach()) for k_, v in tensors.items()})
                vals.append(_psnr(pred.clamp(0, 1), ref))
        if cnet is not None:
            cnet.train(was)
        return float(np.mean(vals))

    history: Dict[str, List[float]] = {key: [] for key in HISTORY_KEYS}
    history["phase"] = []
    peak = len(params)
    eval_every = int(eval_every or max(iterations // 4, 1))

    def record(it, loss_val, phase, psnr_val=None):
        history["iteration"].append(int(it))
        history["test_psnr"].append(round(evaluate() if psnr_val is None else psnr_val, 4))
        history["loss"].append(None if loss_val is None else round(float(loss_val), 6))
        history["seconds"].append(round(time.perf_counter() - t_start, 3))
        history["count"].append(len(params))
        history["phase"].append(phase)

    record(0, None, "start")
    ste = _STE(codec_settings) if quantise_aware == "ste" else None
    ste_start = iterations - int(round(ste_fraction * iterations)) if ste else iterations + 1
    order: List[int] = []
    ema_mse = None
    loss_acc, loss_n = 0.0, 0
    ev = list(events)
    t_train0 = time.perf_counter()
    with Progress(iterations, "fine-tuning", log_every=10, enabled=progress) as bar:
        for it in range(iterations):
            while ev and ev[0][0] == it:
                _, count = ev.pop(0)
                params = _prune_params(params, count, method, gamma, merge, seed, k, dev, meta)
                gopt = torch.optim.Adam(params.groups(lr, extent), eps=1e-15)
                if ste is not None and ste.offsets is not None:
                    ste.refresh(params, meta)
            # learning-rate schedules
            frac = it / max(iterations - 1, 1)
            for g in gopt.param_groups:
                if g["name"] == "means":
                    g["lr"] = extent * lr["means"] * (lr["means_final"] / lr["means"]) ** frac
            if nopt is not None:
                for g in nopt.param_groups:
                    g["lr"] = lr["net_final"] + 0.5 * (lr["net"] - lr["net_final"]) * (1 + math.cos(math.pi * frac))
            if ste is not None and it >= ste_start and (it - ste_start) % max(ste_refresh, 1) == 0:
                ste.refresh(params, meta)
            if not order:
                order = list(rng.permutation(len(train_cams)))
            vi = int(order.pop())
            tensors = params.tensors()
            if ste is not None and it >= ste_start:
                tensors = ste.apply(tensors)
            pred, _ = forward(train_cams[vi], tensors)
            ref = train_targets[vi]
            loss = _loss(pred, ref, ssim_fn)
            gopt.zero_grad(set_to_none=True)
            if nopt is not None:
                nopt.zero_grad(set_to_none=True)
            loss.backward()
            gopt.step()
            if nopt is not None:
                nopt.step()
            with torch.no_grad():
                mse = float(torch.mean((pred.detach().clamp(0, 1) - ref) ** 2))
            ema_mse = mse if ema_mse is None else 0.9 * ema_mse + 0.1 * mse
            loss_acc += float(loss.detach())
            loss_n += 1
            if not math.isfinite(loss_acc):
                raise SundaeError(f"fine-tuning diverged at iteration {it} (loss {float(loss)})")
            bar.update()
            bar.set_postfix(f"psnr {10 * math.log10(1 / max(ema_mse, 1e-12)):.2f} dB n={len(params):,}")
            if (it + 1) % eval_every == 0 or it + 1 == iterations:
                record(it + 1, loss_acc / max(loss_n, 1), "joint")
                loss_acc, loss_n = 0.0, 0
    t_train = time.perf_counter() - t_train0

    with torch.no_grad():
        params.quats.copy_(torch.nn.functional.normalize(params.quats, dim=1))
    final = params.to_gaussians(meta)
    if k == 0:
        final = final.replace(features=None)

    # -- quantisation-consistent polish of the net -----------------------------------------------
    stats: Dict[str, Any] = {}
    t_polish = 0.0
    if quantise_aware != "none":
        t0 = time.perf_counter()
        dec = _codec_roundtrip(final, codec_settings)
        dec_t = dec.to_torch(device=dev)
        dec_tensors = {k_: dec_t[k_] for k_ in ("means", "quats", "scales", "opacities", "sh", "features")}
        stats["test_psnr_decoded_before_polish"] = round(_eval_fixed(dec_tensors, test_cams, test_targets,
                                                                     cnet, render, render_kw), 4)
        if cnet is not None and polish_iterations > 0:
            _polish_net(cnet, dec_tensors, train_cams, train_targets, polish_iterations, lr, ssim_fn,
                        render, render_kw, rng, progress)
        psnr_dec = _eval_fixed(dec_tensors, test_cams, test_targets, cnet, render, render_kw)
        t_polish = time.perf_counter() - t0
        history["iteration"].append(iterations + (polish_iterations if cnet is not None else 0))
        history["test_psnr"].append(round(psnr_dec, 4))
        history["loss"].append(None)
        history["seconds"].append(round(time.perf_counter() - t_start, 3))
        history["count"].append(len(final))
        history["phase"].append("decoded")
        stats["test_psnr_decoded"] = round(psnr_dec, 4)

    if cnet is not None:
        cnet.eval()
    stats.update({
        "start_count": len(pruned), "peak_count": int(peak), "final_count": len(final),
        "train_views": len(train_cams), "test_views": len(test_cams),
        "seconds_teacher": round(t_teacher, 2), "seconds_train": round(t_train, 2),
        "seconds_polish": round(t_polish, 2), "seconds": round(time.perf_counter() - t_start, 2),
        "seconds_per_iteration": round(t_train / max(iterations, 1), 4),
        "prune_events": [list(e) for e in events],
    })
    config = {"iterations": iterations, "resolution": [train_cams[0].width, train_cams[0].height],
              "features": k, "net": cnet is not None, "quantise_aware": quantise_aware,
              "prune_schedule": str(schedule) if schedule else None, "device": str(dev), "seed": seed,
              "polish_iterations": polish_iterations if cnet is not None else 0, "lrs": lr}
    if progress:
        info(f"fine-tuned {len(final):,} Gaussians: held-out PSNR {history['test_psnr'][0]:.2f} -> "
             f"{history['test_psnr'][-1]:.2f} dB in {stats['seconds']:.0f} s")
    return FinetuneResult(gaussians=final, net=cnet, history=history, test_cameras=test_cams,
                          train_cameras=train_cams, num_features=k, config=config, stats=stats)


def _eval_fixed(tensors, cams, refs, cnet, render, render_kw) -> float:
    """Held-out PSNR of fixed Gaussians (+ net)."""
    vals = []
    if cnet is not None:
        cnet.eval()
    with torch.no_grad():
        for cam, ref in zip(cams, refs):
            out = render({k: v for k, v in tensors.items() if k != "features"}, cam,
                         features=tensors.get("features"), **render_kw)
            pred = out.rgb if cnet is None else cnet(_net_input(out.rgb, out.features))[0].permute(1, 2, 0)
            vals.append(_psnr(pred.clamp(0, 1), ref))
    if cnet is not None:
        cnet.train()
    return float(np.mean(vals))


def _polish_net(cnet, tensors, cams, refs, iterations, lr, ssim_fn, render, render_kw, rng, progress):
    """Train the net alone on cached renders of the (decoded) fixed scene."""
    inputs = []
    with torch.no_grad():
        for cam in cams:
            out = render({k: v for k, v in tensors.items() if k != "features"}, cam,
                         features=tensors.get("features"), **render_kw)
            inputs.append(_net_input(out.rgb, out.features))
    opt = torch.optim.Adam(cnet.parameters(), lr=lr["net_final"] * 3)
    cnet.train()
    order: List[int] = []
    with Progress(iterations, "net polish (decoded scene)", log_every=10, enabled=progress) as bar:
        for it in range(iterations):
            if not order:
                order = list(rng.permutation(len(cams)))
            vi = int(order.pop())
            pred = cnet(inputs[vi])[0].permute(1, 2, 0)
            loss = _loss(pred, refs[vi], ssim_fn)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
