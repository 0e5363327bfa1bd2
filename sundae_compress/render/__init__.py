"""Rendering: cameras, the differentiable renderer and its backends.

``render(gaussians, camera, ...)`` is the one entry point; backend "torch" is pure PyTorch
(CPU-capable, differentiable), "gsplat" uses the CUDA library when installed, "auto" picks
gsplat when CUDA and gsplat are available, else torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import SundaeError
from ..gaussians import GaussianSet
from .camera import Camera, look_at
from .cameras import detect_up, generate_cameras, load_cameras, split_views

__all__ = ["Camera", "RenderOutput", "render", "available_backends", "look_at", "as_params",
           "load_cameras", "generate_cameras", "split_views", "detect_up"]


@dataclass
class RenderOutput:
    rgb: torch.Tensor                  # (H, W, 3), not clamped
    alpha: torch.Tensor                # (H, W, 1)
    depth: torch.Tensor                # (H, W, 1) expected depth (sum w z / alpha)
    features: Optional[torch.Tensor]   # (H, W, F) when features were given
    info: Dict = field(default_factory=dict)  # backend, counts, stage timings


def _gsplat_importable() -> bool:
    return importlib.util.find_spec("gsplat") is not None


def available_backends() -> List[str]:
    out = ["torch"]
    if torch.cuda.is_available() and _gsplat_importable():
        out.append("gsplat")
    return out


def as_params(gaussians, device=None, dtype=None) -> Dict[str, torch.Tensor]:
    """GaussianSet or dict of tensors -> dict of tensors (no copy for tensors already there)."""
    if isinstance(gaussians, GaussianSet):
        return gaussians.to_torch(device=device or "cpu", dtype=dtype or torch.float32)
    if isinstance(gaussians, dict):
        missing = [k for k in ("means", "quats", "scales", "opacities", "sh") if gaussians.get(k) is None]
        if missing:
            raise SundaeError(f"render: Gaussian parameters missing: {', '.join(missing)}")
        out = dict(gaussians)
        if device is not None or dtype is not None:
            out = {k: (v.to(device=device or v.device, dtype=dtype or v.dtype) if torch.is_tensor(v) else v)
                   for k, v in out.items()}
        return out
    raise SundaeError(f"render: expected a GaussianSet or a dict of tensors, got {type(gaussians).__name__}")


def render(gaussians: Union[GaussianSet, Dict[str, torch.Tensor]], camera: Camera, *,
           features: Optional[torch.Tensor] = None,
           background: Union[Sequence[float], torch.Tensor] = (0.0, 0.0, 0.0),
           sh_degree: Optional[int] = None, backend: str = "auto", device=None,
           max_pairs: Optional[int] = None) -> RenderOutput:
    """Render one view. ``features`` (N, F) are splatted with the colour weights (no SH, no
    background). Tensors stay on the caller's device (a GaussianSet goes to ``device``, default
    cuda for gsplat, else cpu). ``max_pairs`` bounds the torch backend's working set."""
    if backend == "auto":
        backend = "gsplat" if "gsplat" in available_backends() else "torch"
    if backend not in ("torch", "gsplat"):
        raise SundaeError(f"render: unknown backend {backend!r} (choose auto, torch or gsplat)")
    if device is None and isinstance(gaussians, GaussianSet):
        device = "cuda" if backend == "gsplat" else "cpu"
    params = as_params(gaussians, device=device)
    means = params["means"]
    if features is None and isinstance(gaussians, GaussianSet) and gaussians.features is not None:
        features = params.get("features")
    if features is not None:
        features = torch.as_tensor(features, device=means.device)
        if features.ndim != 2 or features.shape[0] != means.shape[0]:
            raise SundaeError(f"render: features must be (N, F) with N={means.shape[0]}, got {tuple(features.shape)}")
    bg = torch.as_tensor(background, dtype=means.dtype, device=means.device).reshape(3)
    if backend == "gsplat":
        from .backend_gsplat import render_gsplat
        rgb, alpha, depth, feats, info = render_gsplat(params, camera, features, bg, sh_degree)
    else:
        from .backend_torch import render_torch
        from .rasterize import DEFAULT_MAX_PAIRS
        rgb, alpha, depth, feats, info = render_torch(params, camera, features, bg, sh_degree,
                                                      max_pairs=max_pairs or DEFAULT_MAX_PAIRS)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, features=feats, info=info)
