"""gsplat (CUDA) backend. gsplat is imported lazily inside :func:`render_gsplat`, never at module
import, so the package works without it. Conventions are mapped to ours: scales = exp(log
scales), opacities = sigmoid(logits), colours = SH coefficients with sh_degree, OpenCV viewmat,
eps2d = 0.3, near plane 0.01, "RGB+ED" (expected depth)."""

from __future__ import annotations

from typing import Dict, Optional

import torch

from ..errors import SundaeError
from .camera import Camera
from .project import NEAR


def _import_gsplat():
    try:
        import gsplat  # noqa: F401
        from gsplat import rasterization
    except Exception as e:  # ImportError, or a CUDA extension that fails to load
        raise SundaeError(f"the gsplat backend is unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          "install gsplat on a CUDA machine or use --backend torch") from None
    return rasterization


def render_gsplat(params: Dict[str, torch.Tensor], camera: Camera, features: Optional[torch.Tensor],
                  background: torch.Tensor, sh_degree: Optional[int] = None):
    """Same outputs as the torch backend: (rgb, alpha, depth, features, info)."""
    rasterization = _import_gsplat()
    means = params["means"]
    if means.device.type != "cuda":
        raise SundaeError("the gsplat backend needs the Gaussians on a CUDA device")
    dev, dt = means.device, torch.float32
    sh = params["sh"].to(dt)
    full = {1: 0, 4: 1, 9: 2, 16: 3}[sh.shape[1]]
    deg = full if sh_degree is None else min(int(sh_degree), full)
    viewmat = torch.as_tensor(camera.viewmat, dtype=dt, device=dev)[None]
    K = torch.as_tensor(camera.K, dtype=dt, device=dev)[None]
    common = dict(means=means.to(dt), quats=params["quats"].to(dt), scales=torch.exp(params["scales"].to(dt)),
                  opacities=torch.sigmoid(params["opacities"].to(dt)), viewmats=viewmat, Ks=K,
                  width=camera.width, height=camera.height, near_plane=NEAR, eps2d=0.3, packed=False)
    img, alpha, meta = rasterization(colors=sh[:, : (deg + 1) ** 2], sh_degree=deg,
                                     backgrounds=background.to(dev, dt)[None], render_mode="RGB+ED", **common)
    rgb, depth = img[0, ..., :3], img[0, ..., 3:4]
    feats = None
    if features is not None:
        f, _, _ = rasterization(colors=features.to(dt), sh_degree=None, render_mode="RGB", **common)
        feats = f[0]
    return rgb, alpha[0], depth, feats, {"backend": "gsplat"}
