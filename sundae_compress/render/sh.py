"""Real spherical harmonics (degrees 0-3) in the 3DGS sign/ordering convention, in torch."""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Basis values (N, (degree+1)^2) for unit directions ``dirs`` (N, 3)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy),
                C3[5] * z * (xx - yy), C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor, degree: int | None = None) -> torch.Tensor:
    """RGB (N, 3) = max(sum_k basis_k(dir) * sh[:, k] + 0.5, 0). ``sh`` is (N, K, 3);
    ``degree`` (default: all of K) selects the first (degree+1)^2 coefficients."""
    k = sh.shape[1]
    full = {1: 0, 4: 1, 9: 2, 16: 3}[k]
    degree = full if degree is None else min(int(degree), full)
    n = (degree + 1) ** 2
    if degree == 0:
        val = C0 * sh[:, 0]
    else:
        basis = sh_basis(dirs, degree)
        val = torch.einsum("nk,nkc->nc", basis, sh[:, :n])
    return torch.clamp_min(val + 0.5, 0.0)
