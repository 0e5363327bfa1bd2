"""Moment-matched merging of groups of Gaussians: the maths both merge modes share.

:func:`merge_groups` replaces every group of Gaussians by one Gaussian that keeps the group's
mass, centre of mass and second moment; :func:`gaussian_mass` is the weight each member brings.
Used by :mod:`.merge` (assign removed Gaussians to survivors) and :mod:`.collapse` (pairwise edge
collapse).

* mass ``w_i = alpha_i x area_i`` (area = pi x product of the two largest standard deviations):
  the splat's "ink" as seen face-on. It weights the mean, the covariance and the colour.
  Measured on guitar at 10 % (refrender PSNR): collapse 33.87 dB with area mass vs 32.78 dB with
  alpha x volume (volume lets thin, flat splats -- most of a trained scene -- lose their colour
  and position to fat ones); assign+random 31.44 (area) vs 30.91 (volume) vs 30.32 (alpha only).
* covariance ``S = sum w_i (S_i + d_i d_i^T) / W`` -> eigendecomposition -> rotation, log-scales.
* colour / SH / features: ``w``-weighted mean.
* opacity (``opacity="coverage"``): ``alpha = min(0.99, sum alpha_i area_i / area_merged)`` so that
  the group's total ink is preserved; a lone survivor keeps its own opacity exactly.
  ``"overlap"`` (``1 - prod (1 - alpha_i)^(area_i / area_merged)``) measured the same within
  noise (33.91 vs 33.87 dB collapse, 31.54 vs 31.44 assign); ``"mean"`` is the ink-weighted mean.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import SundaeError
from ..gaussians import GaussianSet, logit
from .moments import cov6_from, cov6_to_rotation_scales, group_moments, splat_area, splat_volume, weighted_group_mean

__all__ = ["merge_groups", "gaussian_mass", "MASS_KINDS", "OPACITY_RULES"]

MASS_KINDS = ("area", "volume", "alpha")
OPACITY_RULES = ("coverage", "overlap", "mean")
ALPHA_MAX = 0.99
ALPHA_MIN = 1e-4


def gaussian_mass(gs: GaussianSet, kind: str = "area") -> np.ndarray:
    """Per-Gaussian merge weight (float64): alpha x area / volume / 1."""
    alpha = gs.alphas.astype(np.float64)
    if kind == "area":
        return alpha * splat_area(gs.scales)
    if kind == "volume":
        return alpha * splat_volume(gs.scales)
    if kind == "alpha":
        return alpha
    raise SundaeError(f"unknown merge mass {kind!r}; choose one of {', '.join(MASS_KINDS)}")


def merge_groups(gs: GaussianSet, group: np.ndarray, n_groups: int, anchor: Optional[np.ndarray] = None, *,
                 mass: str = "area", opacity: str = "coverage", cov6: Optional[np.ndarray] = None,
                 meta: Optional[dict] = None) -> GaussianSet:
    """Replace every group of Gaussians by its moment-matched Gaussian.

    ``group`` (N,) holds a group id in ``[0, n_groups)`` for every Gaussian of ``gs`` (every group
    must be non-empty). ``anchor`` (n_groups, 3) is a point near each group (default: the first
    member); it only serves numerical precision.
    """
    group = np.asarray(group, np.int64)
    n = len(gs)
    if group.shape != (n,):
        raise ValueError(f"group must have shape ({n},), got {group.shape}")
    if n_groups and (group.min() < 0 or group.max() >= n_groups):
        raise ValueError("group ids out of range")
    if anchor is None:
        first = np.full(n_groups, n, np.int64)
        np.minimum.at(first, group, np.arange(n))
        anchor = gs.means[first].astype(np.float64)
    if cov6 is None:
        cov6 = cov6_from(gs.quats, gs.scales)
    w = gaussian_mass(gs, mass)
    w = np.where(np.isfinite(w), w, 0.0)
    wsum, mu, cov = group_moments(group, n_groups, w, gs.means, cov6, np.asarray(anchor, np.float64))
    quats, scales = cov6_to_rotation_scales(cov)
    # colour, SH and features: mass-weighted means (wsum already has the zero-mass fallback)
    w_eff = np.where((wsum > 0)[group], w, 1.0) if not (w > 0).all() else w
    wsum_eff = np.bincount(group, weights=w_eff, minlength=n_groups)
    sh = weighted_group_mean(group, n_groups, w_eff, wsum_eff, gs.sh).reshape(n_groups, *gs.sh.shape[1:])
    feats = None
    if gs.features is not None:
        feats = weighted_group_mean(group, n_groups, w_eff, wsum_eff, gs.features)
    alpha = _merged_alpha(gs, group, n_groups, scales, opacity)
    size = np.bincount(group, minlength=n_groups)
    # singletons are copied verbatim (no eigh round-off)
    single = size == 1
    if single.any():
        src = np.full(n_groups, -1, np.int64)
        src[group] = np.arange(n)
        s = src[single]
        quats[single] = gs.quats[s]
        scales[single] = gs.scales[s]
        mu[single] = gs.means[s]
    opac = logit(alpha, ALPHA_MIN, ALPHA_MAX).astype(np.float32)
    if single.any():
        opac[single] = gs.opacities[src[single]]
    out_meta = dict(gs.meta)
    if meta:
        out_meta.update(meta)
    return GaussianSet(means=mu.astype(np.float32), quats=quats, scales=scales, opacities=opac, sh=sh,
                       features=feats, meta=out_meta)


def _merged_alpha(gs: GaussianSet, group: np.ndarray, n_groups: int, merged_scales: np.ndarray,
                  rule: str) -> np.ndarray:
    alpha = gs.alphas.astype(np.float64)
    area = splat_area(gs.scales)
    area_m = splat_area(merged_scales)
    if rule == "coverage":
        ink = np.bincount(group, weights=alpha * area, minlength=n_groups)
        return np.minimum(ink / area_m, ALPHA_MAX)
    if rule == "overlap":
        lg = np.bincount(group, weights=area * np.log1p(-np.minimum(alpha, ALPHA_MAX)), minlength=n_groups)
        return 1.0 - np.exp(lg / area_m)
    if rule == "mean":
        ink = np.bincount(group, weights=alpha * area, minlength=n_groups)
        asum = np.bincount(group, weights=area, minlength=n_groups)
        return ink / np.maximum(asum, 1e-300)
    raise SundaeError(f"unknown opacity rule {rule!r}; choose one of {', '.join(OPACITY_RULES)}")
