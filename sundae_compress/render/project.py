"""EWA projection of 3D Gaussians to screen space (differentiable, torch).

Conventions (shared with the reference renderer and gsplat): OpenCV camera, near plane z > 0.01,
2D covariance J W Σ Wᵀ Jᵀ with the view-frustum-clamped Jacobian (limits 1.3x the half field
of view), plus a 0.3 px² low-pass on the diagonal.

Instead of a square 3σ radius we bound each Gaussian by the exact ellipse outside which its
alpha falls below 1/255 (``dᵀΣ⁻¹d ≤ 2 ln(255·opacity)``, never wider than ~3.33σ); this is
what a tile rasteriser computes for the pixels of the tiles it visits, without the tile-shape
dependence, and it yields per-axis pixel bounding boxes that are much tighter for thin splats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import math

import torch

from .camera import Camera
from .sh import eval_sh

NEAR = 0.01
EPS2D = 0.3
ALPHA_MIN = 1.0 / 255.0


@dataclass
class Projected:
    """Visible Gaussians of one view, sorted front to back (all tensors length V)."""
    index: torch.Tensor     # (V,) long, rows of the input set
    mean2d: torch.Tensor    # (V, 2) pixel coordinates
    conic: torch.Tensor     # (V, 3) inverse 2D covariance (a, b, c): a dx² + 2b dx dy + c dy²
    depth: torch.Tensor     # (V,) camera z
    opacity: torch.Tensor   # (V,) sigmoid(logit)
    bbox: torch.Tensor      # (V, 4) long pixel ranges x0, x1, y0, y1 (half-open, clipped)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz (any norm) -> (N, 3, 3)."""
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(-1, 3, 3)


def view_tensors(camera: Camera, like: torch.Tensor):
    v = torch.as_tensor(camera.viewmat, dtype=like.dtype, device=like.device)
    return v[:3, :3], v[:3, 3]


def _precull(means, scales, opacity_logits, R, t, camera: Camera, tanx: float, tany: float):
    """Rows that may cover a pixel (None: all of them), from per-Gaussian bounds only.

    Drops rows behind the near plane, too transparent to ever reach ALPHA_MIN, and rows whose
    screen ellipse provably misses the image: the ellipse :func:`project` computes has half-width
    sqrt(k2 a) with k2 <= 2 ln 255 and a <= |J_x|^2 s_max^2 + EPS2D (J_x the first row of the
    clamped Jacobian, s_max the largest scale), so a row whose centre lies further than that bound
    (+1 px) outside the image would be culled by the exact test anyway: the result is unchanged,
    only the per-row work on off-screen Gaussians of large scenes is saved."""
    W, H = camera.width, camera.height
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    pc = means @ R.T + t
    x, y, z = pc.unbind(1)
    ok = (z > NEAR) & (opacity_logits > math.log(ALPHA_MIN / (1 - ALPHA_MIN)))
    zi = 1.0 / z.clamp_min(NEAR)
    s2 = torch.exp(2.0 * scales.max(1).values)
    k2 = 2.0 * math.log(255.0) * 1.0001
    for u, f, c, size, tan in ((x, fx, cx, W, tanx), (y, fy, cy, H, tany)):
        tu = u * zi
        tc = tu.clamp(-(c / f + 0.3 * tan), (size - c) / f + 0.3 * tan)
        half = torch.sqrt(k2 * ((f * zi) ** 2 * (1.0 + tc * tc) * s2 + EPS2D))
        mu = f * tu + c
        ok &= ~((mu + half < -1.0) | (mu - half > size + 1.0))  # NaN bounds keep the row
    if bool(ok.all()):
        return None
    return torch.nonzero(ok).squeeze(1)


def project(means, quats, scales, opacity_logits, camera: Camera) -> Optional[Projected]:
    """Project and cull; returns None when nothing is visible."""
    R, t = view_tensors(camera, means)
    W, H = camera.width, camera.height
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    tanx, tany = 0.5 * W / fx, 0.5 * H / fy
    with torch.no_grad():  # cheap pre-cull: behind the near plane, too transparent, off screen
        cand = _precull(means, scales, opacity_logits, R, t, camera, tanx, tany)
    if cand is None:  # every row is a candidate: no gathers
        m, q, s = means, quats, scales
        cand = torch.arange(means.shape[0], device=means.device)
    elif cand.numel() == 0:
        return None
    else:
        m, q, s = means.index_select(0, cand), quats.index_select(0, cand), scales.index_select(0, cand)
    pc = m @ R.T + t
    x, y, z = pc.unbind(1)
    rot = quat_to_rotmat(q)
    M = rot * torch.exp(s)[:, None, :]
    tx = torch.clamp(x / z, -(cx / fx + 0.3 * tanx), (W - cx) / fx + 0.3 * tanx)
    ty = torch.clamp(y / z, -(cy / fy + 0.3 * tany), (H - cy) / fy + 0.3 * tany)
    zi = 1.0 / z
    zero = torch.zeros_like(z)
    J = torch.stack([fx * zi, zero, -fx * tx * zi, zero, fy * zi, -fy * ty * zi], 1).reshape(-1, 2, 3)
    A = (J @ R) @ M                        # (V, 2, 3); cov2d = A Aᵀ
    a = (A[:, 0] * A[:, 0]).sum(1) + EPS2D
    b = (A[:, 0] * A[:, 1]).sum(1)
    c = (A[:, 1] * A[:, 1]).sum(1) + EPS2D
    det = a * c - b * b
    mx = fx * x * zi + cx
    my = fy * y * zi + cy
    op = torch.sigmoid(opacity_logits.index_select(0, cand))
    with torch.no_grad():
        k2 = 2.0 * torch.log(op * 255.0).clamp_min(0.0)
        ex = torch.sqrt(k2 * a)
        ey = torch.sqrt(k2 * c)
        x0 = torch.ceil(mx - ex - 0.5).clamp(0, W)
        x1 = (torch.floor(mx + ex - 0.5) + 1).clamp(0, W)
        y0 = torch.ceil(my - ey - 0.5).clamp(0, H)
        y1 = (torch.floor(my + ey - 0.5) + 1).clamp(0, H)
        ok = (det > 0) & (x1 > x0) & (y1 > y0) & torch.isfinite(mx) & torch.isfinite(my)
        keep = torch.nonzero(ok).squeeze(1)
        keep = keep[torch.argsort(z.detach()[keep], stable=True)]
        bbox = torch.stack([x0, x1, y0, y1], 1)[keep].long()
    if keep.numel() == 0:
        return None
    inv = 1.0 / det.index_select(0, keep)
    conic = torch.stack([c.index_select(0, keep) * inv, -b.index_select(0, keep) * inv,
                         a.index_select(0, keep) * inv], 1)
    mean2d = torch.stack([mx.index_select(0, keep), my.index_select(0, keep)], 1)
    return Projected(index=cand[keep], mean2d=mean2d, conic=conic, depth=z.index_select(0, keep),
                     opacity=op.index_select(0, keep), bbox=bbox)


def view_colors(means, sh, index, camera: Camera, sh_degree=None) -> torch.Tensor:
    """Per-Gaussian RGB for this view (SH evaluated along mean - camera centre)."""
    campos = torch.as_tensor(camera.position, dtype=means.dtype, device=means.device)
    shv = sh.index_select(0, index)
    if shv.shape[1] == 1 or sh_degree == 0:
        return eval_sh(shv, None, 0) if shv.shape[1] == 1 else eval_sh(shv[:, :1], None, 0)
    d = means.index_select(0, index) - campos
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return eval_sh(shv, d, sh_degree)
