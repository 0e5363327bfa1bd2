"""The training loop: distil targets into the Gaussians (+ net), with pruning and quantisation
supplied as hooks (:class:`~.config.Hooks`), never imported."""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import SundaeError
from ..progress import Progress
from .config import FinetuneConfig, Hooks
from .infer import net_input
from .tensors import TorchGaussians


def image_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float, ssim_fn) -> torch.Tensor:
    """(1 - w) L1 + w (1 - SSIM): the 3DGS loss (w = 0.2)."""
    l1 = (pred - target).abs().mean()
    if ssim_weight <= 0 or min(pred.shape[0], pred.shape[1]) < 11:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim_fn(pred, target))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


class Student:
    """Render the trainable Gaussians for a camera (+ the net): the prediction."""

    def __init__(self, render: Callable, render_kw: dict, net: Optional[torch.nn.Module]):
        self.render, self.render_kw, self.net = render, render_kw, net

    def __call__(self, g: TorchGaussians, cam) -> torch.Tensor:
        out = self.render(g.render_input(), cam, features=g.features, **self.render_kw)
        if self.net is None:
            return out.rgb
        return self.net(net_input(out.rgb, out.features))[0].permute(1, 2, 0)

    @torch.no_grad()
    def score(self, g: TorchGaussians, cams: Sequence, refs: Sequence[torch.Tensor]) -> float:
        """Mean PSNR over fixed views (net in eval mode for the duration)."""
        was = self.net.training if self.net is not None else False
        if self.net is not None:
            self.net.eval()
        d = g.detached()
        vals = [psnr(self(d, c).clamp(0, 1), r) for c, r in zip(cams, refs)]
        if self.net is not None:
            self.net.train(was)
        return float(np.mean(vals)) if vals else float("nan")


class _STE:
    """Straight-through fake quantisation: forward uses roundtrip(p), gradients reach p."""

    def __init__(self, roundtrip: Callable, meta: dict):
        self.roundtrip, self.meta = roundtrip, meta
        self.offsets: Optional[TorchGaussians] = None

    def refresh(self, g: TorchGaussians) -> None:
        q = self.roundtrip(g.to_set(self.meta))
        qt = TorchGaussians.from_set(q, 0 if g.features is None else g.features.shape[1],
                                     device=g.means.device, trainable=False)
        if g.features is None:
            qt.features = None
        self.offsets = qt.minus(g)

    def apply(self, g: TorchGaussians) -> TorchGaussians:
        return g if self.offsets is None else g.plus(self.offsets)


def scale_limit(scales: torch.Tensor, growth: Optional[float], ceiling: Optional[float]) -> Optional[torch.Tensor]:
    """The largest log-scale each axis may reach (same shape as ``scales``), or None for no cap:
    the starting value + log(``growth``) and/or the global log-scale ``ceiling``, whichever is lower
    (a Gaussian that starts above the ceiling, e.g. made by merging, is shrunk to it)."""
    if growth is None and ceiling is None:
        return None
    start = scales.detach()
    lim = start + math.log(float(growth)) if growth is not None else torch.full_like(start, float("inf"))
    if ceiling is not None:
        lim = torch.clamp(lim, max=float(ceiling))
    return lim


def train(params: TorchGaussians, source, cfg: FinetuneConfig, *, student: Student, hooks: Hooks,
          events: List[Tuple[int, int]], extent: float, meta: dict, record: Callable,
          ssim_fn, scale_ceiling: Optional[float] = None) -> TorchGaussians:
    """``cfg.iterations`` Adam steps on targets from ``source.next()``; prune ``events`` applied via
    ``hooks.prune``; ``record(iteration, mean loss, params)`` every ``cfg.eval_every`` and at the end.
    Log-scales are clamped after every step to :func:`scale_limit` (``cfg.max_scale_growth``,
    ``scale_ceiling``: a global log-scale cap) when either is set."""
    lr = cfg.lrs
    k = int(cfg.features)
    dev = params.means.device
    net = student.net
    gopt = torch.optim.Adam(params.param_groups(lr, extent), eps=1e-15)
    nopt = torch.optim.Adam(net.parameters(), lr=lr["net"]) if net is not None else None
    ste = None
    iterations = int(cfg.iterations)
    if cfg.quantise_aware == "ste":
        if hooks.roundtrip is None:
            raise SundaeError("quantise_aware='ste' needs the codec round trip hook")
        ste = _STE(hooks.roundtrip, meta)
    ste_start = iterations - int(round(cfg.ste_fraction * iterations)) if ste else iterations + 1
    eval_every = int(cfg.eval_every or max(iterations, 1))
    ev = list(events)
    ema_mse, loss_acc, loss_n = None, 0.0, 0
    limit = scale_limit(params.scales, cfg.max_scale_growth, scale_ceiling)
    with Progress(iterations, "fine-tuning", log_every=10, enabled=cfg.progress) as bar:
        for it in range(iterations):
            while ev and ev[0][0] == it:
                _, count = ev.pop(0)
                if hooks.prune is None:
                    raise SundaeError("continuous pruning needs the prune hook")
                params = TorchGaussians.from_set(hooks.prune(params.to_set(meta), int(count)), k, dev)
                gopt = torch.optim.Adam(params.param_groups(lr, extent), eps=1e-15)
                limit = scale_limit(params.scales, cfg.max_scale_growth, scale_ceiling)
                if ste is not None and ste.offsets is not None:
                    ste.refresh(params)
            frac = it / max(iterations - 1, 1)
            for g in gopt.param_groups:
                if g["name"] == "means":
                    g["lr"] = extent * lr["means"] * (lr["means_final"] / lr["means"]) ** frac
            if nopt is not None:
                for g in nopt.param_groups:
                    g["lr"] = lr["net_final"] + 0.5 * (lr["net"] - lr["net_final"]) * (1 + math.cos(math.pi * frac))
            if ste is not None and it >= ste_start and (it - ste_start) % max(cfg.ste_refresh, 1) == 0:
                ste.refresh(params)
            cam, ref = source.next()
            g_in = ste.apply(params) if ste is not None and it >= ste_start else params
            pred = student(g_in, cam)
            loss = image_loss(pred, ref, cfg.ssim_weight, ssim_fn)
            gopt.zero_grad(set_to_none=True)
            if nopt is not None:
                nopt.zero_grad(set_to_none=True)
            loss.backward()
            gopt.step()
            if limit is not None:
                with torch.no_grad():
                    torch.minimum(params.scales, limit, out=params.scales)
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
            bar.set_postfix(f"training-draw PSNR {10 * math.log10(1 / max(ema_mse, 1e-12)):.2f} dB (running mean), "
                            f"n={len(params):,}")
            if (it + 1) % eval_every == 0 or it + 1 == iterations:
                record(it + 1, loss_acc / max(loss_n, 1), params)
                loss_acc, loss_n = 0.0, 0
    params.normalise_quats()
    return params
