"""Pure-PyTorch rendering backend: runs on any torch device (CPU included) and is
differentiable w.r.t. means, quats, scales, opacities, sh and features."""

from __future__ import annotations

import time
from typing import Dict, Optional

import torch

from .camera import Camera
from .project import project, view_colors
from .rasterize import DEFAULT_MAX_PAIRS, composite


def render_torch(params: Dict[str, torch.Tensor], camera: Camera, features: Optional[torch.Tensor],
                 background: torch.Tensor, sh_degree: Optional[int] = None,
                 max_pairs: int = DEFAULT_MAX_PAIRS):
    """Returns (rgb (H,W,3), alpha (H,W,1), depth (H,W,1), features (H,W,F) or None, info)."""
    W, H = camera.width, camera.height
    means = params["means"]
    dev, dt = means.device, means.dtype
    info: Dict = {"backend": "torch"}
    t0 = time.perf_counter()
    proj = project(means, params["quats"], params["scales"], params["opacities"], camera)
    F = 0 if features is None else features.shape[1]
    if proj is None:
        info.update(n_visible=0, t_project=time.perf_counter() - t0, t_blend=0.0)
        acc = torch.zeros(H * W, 3 + 1 + F + 1, dtype=dt, device=dev)
        # keep the graph connected so .backward() works (zero gradients)
        acc = acc + 0.0 * sum(p.sum() for p in params.values() if p is not None and p.requires_grad)
    else:
        cols = view_colors(means, params["sh"], proj.index, camera, sh_degree)
        vals = [cols, proj.depth[:, None]]
        if features is not None:
            vals.append(features.index_select(0, proj.index).to(dt))
        values = torch.cat(vals, 1)
        t1 = time.perf_counter()
        info.update(n_visible=len(proj.index), t_project=t1 - t0)
        acc = composite(proj, values, W, H, max_pairs=max_pairs, stats=info)
        info["t_blend"] = time.perf_counter() - t1
    acc = acc.reshape(H, W, -1)
    alpha = acc[..., -1:]
    rgb = acc[..., :3] + (1.0 - alpha) * background.to(dev, dt)
    depth = acc[..., 3:4] / alpha.clamp_min(1e-10)
    feats = acc[..., 4:4 + F] if features is not None else None
    return rgb, alpha, depth, feats, info
