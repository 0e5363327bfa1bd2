"""Image quality metrics in torch (differentiable): PSNR and SSIM.

Images are (H, W, 3) or (B, H, W, 3) tensors with values in [0, 1]."""

from __future__ import annotations


import torch
import torch.nn.functional as F


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean((a - b) ** 2)


def psnr(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (capped at 100 dB for identical images)."""
    m = mse(a, b).clamp_min(1e-10)
    return 10.0 * torch.log10(max_val * max_val / m)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, max_val: float = 1.0,
         reduce: bool = True) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01,
    K2 = 0.03, computed per channel on the 'valid' region and averaged. ``reduce=False``
    returns the SSIM map (B, 3, H', W')."""
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    x, y = a, b
    if x.ndim == 3:
        x, y = x[None], y[None]
    x = x.permute(0, 3, 1, 2)
    y = y.permute(0, 3, 1, 2)
    C = x.shape[1]
    win = min(window, x.shape[2], x.shape[3])
    g = _gaussian_window(win, sigma, x.dtype, x.device)
    gx = g.reshape(1, 1, 1, win).expand(C, 1, 1, win)
    gy = g.reshape(1, 1, win, 1).expand(C, 1, win, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gx, groups=C), gy, groups=C)

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return m.mean() if reduce else m


__all__ = ["mse", "psnr", "ssim"]
