"""Fine-tuning after pruning: distil the original scene into the pruned one (+ optional net).

There are no training photos in a ``.ply``, so the teacher is the ORIGINAL unpruned scene. Training
views come from a camera *distribution* (:class:`~sundae_compress.render.cameras.ViewSampler`): a
fresh random camera and image size every iteration over the whole sphere of directions, close-up to
far, several focal lengths, jittered aim, plus views around the scene's real cameras when it has
them. The teacher is rendered for each drawn camera (:mod:`.views`). The deterministic *novel* views
used by evaluation are never drawn (exclusion cones, see ``render/cameras.py``).

The pieces: :mod:`.config` (options, hooks), :mod:`.tensors` (torch-side Gaussians), :mod:`.views`
(targets), :mod:`.loop` (the optimisation), :mod:`.polish` (net-only polish on the codec-decoded
scene), :mod:`.infer` (postprocess, used at render time). This module wires them together.

Quantisation consistency (``quantise_aware``, needs ``hooks.roundtrip``): ``"decode"`` (default)
scores the codec-decoded scene and, with a net, polishes the net on it; ``"ste"`` additionally
trains the last ``ste_fraction`` of the run through a straight-through estimator; ``"none"``.
Continuous pruning (``prune_schedule``, :mod:`.schedule`, needs ``hooks.prune``): start from a
larger scene and shrink it to ``target_count`` during the first part of the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import SundaeError
from ..gaussians import GaussianSet
from ..progress import info
from .config import TEACHER_POOL_ABOVE, FinetuneConfig, Hooks
from .infer import make_postprocess
from .loop import Student, train
from .polish import polish_net
from .schedule import PruneSchedule
from .tensors import TorchGaussians
from .unet import CompensationNet
from .views import FreshTeacher, PhotoTargets, PoolTeacher

HISTORY_KEYS = ("iteration", "test_psnr", "loss", "seconds", "count", "phase")


@dataclass
class FinetuneResult:
    gaussians: GaussianSet                 # fine-tuned (float) Gaussians, .features when K > 0
    net: Optional[CompensationNet]
    history: Dict[str, List[Any]]
    eval_cameras: list                     # the near-training views scored into the history
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
        return make_postprocess(self.net, self.num_features)

    def summary(self) -> Dict[str, Any]:
        """JSON-able digest: iterations, counts, PSNRs (trainer's near views) and seconds."""
        out = {k: self.config.get(k) for k in ("iterations", "resolution", "features", "net", "teacher",
                                               "quantise_aware", "prune_schedule", "device")}
        out.update(self.stats)
        h = self.history
        if h.get("test_psnr"):
            out["test_psnr_start"] = h["test_psnr"][0]
            out["test_psnr_end"] = h["test_psnr"][-1]
        if self.net is not None:
            out["net_params"] = self.net.num_params()
        return out


def _device(name) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def finetune(original: GaussianSet, pruned: GaussianSet, config: Optional[FinetuneConfig] = None, *,
             cameras: Optional[Sequence] = None, images: Optional[Dict[str, Any]] = None,
             hooks: Optional[Hooks] = None, **options) -> FinetuneResult:
    """Fine-tune ``pruned`` (and optionally a compensation net) to reproduce ``original``.

    ``config``: a :class:`FinetuneConfig`; keyword ``options`` override its fields. ``cameras``: the
    scene's real views (training draws are also taken around them); ``images``: photos keyed by
    camera name, used as the targets instead of the teacher. ``hooks``: pruning / codec round trip.
    """
    cfg = FinetuneConfig.build(config, **options)
    if cfg.threads is None:
        return _finetune(original, pruned, cfg, cameras, images, hooks or Hooks())
    old = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        return _finetune(original, pruned, cfg, cameras, images, hooks or Hooks())
    finally:
        torch.set_num_threads(old)


def _finetune(original, pruned, cfg: FinetuneConfig, cameras, images, hooks: Hooks) -> FinetuneResult:
    from ..metrics import ssim as ssim_fn
    from ..render import render
    from ..render.cameras import ViewFrame, ViewSampler, near_views

    t_start = time.perf_counter()
    dev = _device(cfg.device)
    cfg = cfg.resolved(dev.type == "cuda")
    k = int(cfg.features)
    if len(pruned) == 0:
        raise SundaeError("nothing to fine-tune: the pruned scene is empty")
    schedule = PruneSchedule.parse(cfg.prune_schedule)
    if schedule is not None and cfg.target_count is None:
        raise SundaeError("continuous pruning needs target_count")
    events = schedule.plan(len(pruned), int(cfg.target_count), cfg.iterations) if schedule else []
    if cfg.quantise_aware != "none" and hooks.roundtrip is None:
        cfg.quantise_aware = "none"    # no codec supplied: nothing to be consistent with
    torch.manual_seed(cfg.seed)
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=dev)
    render_kw = dict(background=bg, backend=cfg.backend)

    # -- targets ------------------------------------------------------------------------------
    real = list(cameras or [])
    frame = ViewFrame.of(original, cameras=real)
    orig_t = original.to_torch(device=dev)
    orig_in = {n: orig_t[n] for n in ("means", "quats", "scales", "opacities", "sh")}

    @torch.no_grad()
    def teacher(cam) -> torch.Tensor:
        return render(orig_in, cam, **render_kw).rgb.clamp(0, 1)

    sampler = ViewSampler(frame, cameras=real, seed=cfg.seed, widths=cfg.train_widths(),
                          real_share=cfg.real_share)
    mode = "photos"
    if images is not None:
        cams = [c for c in real if c.name in images]
        if len(cams) < 2:
            raise SundaeError("fewer than 2 cameras have a matching training image")
        source = PhotoTargets(cams, images, cfg.resolution, dev, seed=cfg.seed)
    else:
        mode = cfg.teacher if cfg.teacher != "auto" else ("pool" if len(original) > TEACHER_POOL_ABOVE else "fresh")
        source = (PoolTeacher(teacher, sampler, cfg.pool_views, seed=cfg.seed, progress=cfg.progress)
                  if mode == "pool" else FreshTeacher(teacher, sampler))
    eval_cams = near_views(frame, n=cfg.eval_views, size=(256, 192)) if cfg.eval_views > 0 else []
    # what the history's PSNRs are measured on, in the words every printed figure uses
    check_views = f"trainer check views ({len(eval_cams)} training-distribution draws, 256x192)"
    eval_refs = [teacher(c) for c in eval_cams]

    # -- parameters, net -------------------------------------------------------------------------
    params = TorchGaussians.from_set(pruned, k, dev)
    meta = dict(pruned.meta)
    extent = 3.0 * frame.radius
    cnet: Optional[CompensationNet] = None
    if cfg.net:
        cnet = CompensationNet(3 + k, width=cfg.net_width, levels=cfg.net_levels,
                               max_width=cfg.net_max_width).to(dev)
    student = Student(render, render_kw, cnet)

    history: Dict[str, List[Any]] = {key: [] for key in HISTORY_KEYS}

    def record(it, loss_val, g, phase="joint", psnr_val=None):
        history["iteration"].append(int(it))
        val = student.score(g, eval_cams, eval_refs) if psnr_val is None else psnr_val
        history["test_psnr"].append(round(val, 4))
        history["loss"].append(None if loss_val is None else round(float(loss_val), 6))
        history["seconds"].append(round(time.perf_counter() - t_start, 3))
        history["count"].append(len(g))
        history["phase"].append(phase)

    record(0, None, params, "start")
    t0 = time.perf_counter()
    ceiling = None
    if cfg.max_scale_quantile:
        ceiling = float(np.quantile(original.scales.max(1), float(cfg.max_scale_quantile)))
    params = train(params, source, cfg, student=student, hooks=hooks, events=events, extent=extent,
                   meta=meta, record=record, ssim_fn=ssim_fn, scale_ceiling=ceiling)
    t_train = time.perf_counter() - t0
    final = params.to_set(meta)
    if k == 0:
        final = final.replace(features=None)

    # -- quantisation-consistent polish of the net ------------------------------------------------
    stats: Dict[str, Any] = {}
    t_polish = 0.0
    if cfg.quantise_aware != "none":
        t0 = time.perf_counter()
        dec = TorchGaussians.from_set(hooks.roundtrip(final), k, dev, trainable=False)
        if k == 0:
            dec.features = None
        stats["test_psnr_decoded_before_polish"] = round(student.score(dec, eval_cams, eval_refs), 4)
        n_polish = cfg.polish_iterations if cnet is not None else 0
        if n_polish > 0:
            pcams = [sampler.sample() for _ in range(cfg.polish_views)]
            prefs = [teacher(c) for c in pcams]
            polish_net(cnet, dec, pcams, prefs, n_polish, cfg.lrs["net_final"] * 3, cfg.ssim_weight, ssim_fn,
                       render, render_kw, seed=cfg.seed, progress=cfg.progress)
        t_polish = time.perf_counter() - t0
        record(cfg.iterations + n_polish, None, dec, "decoded")
        stats["test_psnr_decoded"] = history["test_psnr"][-1]
    if cnet is not None:
        cnet.eval()
    stats.update({
        "start_count": len(pruned), "peak_count": int(max([len(pruned)] + history["count"])),
        "final_count": len(final), "eval_views": len(eval_cams), "test_views": check_views,
        "teacher_renders": source.renders, "seconds_teacher": round(source.seconds, 2),
        "sampler_rejected": sampler.rejected,
        "seconds_train": round(t_train, 2), "seconds_polish": round(t_polish, 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "seconds_per_iteration": round(t_train / max(cfg.iterations, 1), 4),
        "prune_events": [list(e) for e in events],
    })
    config = {"iterations": cfg.iterations, "resolution": cfg.resolution, "train_widths": list(cfg.train_widths()),
              "features": k, "net": cnet is not None, "teacher": mode, "quantise_aware": cfg.quantise_aware,
              "prune_schedule": str(schedule) if schedule else None, "device": str(dev), "seed": cfg.seed,
              "polish_iterations": cfg.polish_iterations if cnet is not None else 0, "lrs": cfg.lrs}
    if cfg.progress:
        info(f"fine-tuned {len(final):,} Gaussians: {check_views} PSNR {history['test_psnr'][0]:.2f} -> "
             f"{history['test_psnr'][-1]:.2f} dB in {stats['seconds']:.0f} s")
    return FinetuneResult(gaussians=final, net=cnet, history=history, eval_cameras=eval_cams,
                          num_features=k, config=config, stats=stats)
