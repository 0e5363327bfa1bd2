"""Moment matching of groups of Gaussians (the maths behind merge-aware pruning).

A group of Gaussians ``i`` with masses ``w_i``, means ``mu_i`` and covariances ``S_i`` is replaced
by the single Gaussian with the same first two moments::

    mu = sum_i w_i mu_i / W
    S  = sum_i w_i (S_i + (mu_i - mu)(mu_i - mu)^T) / W,        W = sum_i w_i

Everything here works on flat arrays so that millions of Gaussians are grouped with a few
``np.bincount`` calls (no Python loop over groups, no N x N memory):

* :func:`cov6_from` -- world covariances as 6 unique entries (xx, xy, xz, yy, yz, zz), chunked.
* :func:`group_moments` -- masses, means and covariances of every group in one pass.
* :func:`cov6_to_rotation_scales` -- symmetric eigendecomposition back to a right-handed rotation
  (as a unit quaternion) and log-scales, with tiny / negative eigenvalues clamped.
* :func:`splat_area` -- the footprint proxy (pi x product of the two largest standard deviations).

With the native kernel (``csrc/merge.c``, loaded by :mod:`.native`)
``cov6_from`` and the eigen-decompositions (cyclic Jacobi, same output as ``numpy.linalg.eigh``
to ~1e-15) run threaded in C and ``group_moments`` accumulates all ten group sums in one C pass;
the numpy code below is the fallback.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..gaussians import quat_to_rotmat, rotmat_to_quat
from .native import lib as native_lib
from .native import ptr, run_parallel, split

#: Index pairs of the 6 unique covariance entries, in storage order.
COV6 = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))

#: Smallest standard deviation a merged Gaussian may get, relative to the largest one of the
#: same Gaussian (keeps eigh / log finite for perfectly flat groups).
MIN_REL_STD = 1e-4
#: Absolute floor on standard deviations, world units.
MIN_ABS_STD = 1e-7
#: Log-scales are clamped to ±this in the moment maths (e^50 ≈ 5e21 standard deviations; a
#: trained scene's lie within about ±15). Garbage values (a mis-typed PLY column gives log-scales
#: up to 3e38) would otherwise overflow exp() and turn the merged Gaussians into NaN.
LOG_SCALE_LIMIT = 50.0


def clamped_log_scales(scales: np.ndarray) -> np.ndarray:
    """float64 log-scales clamped to ±:data:`LOG_SCALE_LIMIT`."""
    return np.clip(np.asarray(scales, np.float64), -LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)


def cov6_from(quats: np.ndarray, scales: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """(N, 6) float64 covariances R diag(exp(2 s)) R^T from wxyz quaternions and log-scales."""
    n = len(quats)
    out = np.empty((n, 6), np.float64)
    lib = native_lib()
    if lib is not None and n:
        q = np.ascontiguousarray(quats, np.float32)
        s = np.ascontiguousarray(clamped_log_scales(scales), np.float32)
        run_parallel(lambda a, b: lib.cov6_rows(ptr(q), ptr(s), a, b, ptr(out)), split(n, 8))
        return out
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        r = quat_to_rotmat(quats[a:b])
        v = np.exp(2.0 * clamped_log_scales(scales[a:b]))
        for c, (i, j) in enumerate(COV6):
            out[a:b, c] = (r[:, i, :] * r[:, j, :] * v).sum(1)
    return out


def cov6_to_mat(c6: np.ndarray) -> np.ndarray:
    """(N, 6) -> (N, 3, 3) symmetric matrices."""
    m = np.empty((len(c6), 3, 3), c6.dtype)
    for c, (i, j) in enumerate(COV6):
        m[:, i, j] = c6[:, c]
        m[:, j, i] = c6[:, c]
    return m


def splat_area(scales: np.ndarray) -> np.ndarray:
    """pi x product of the two largest standard deviations (float64), from log-scales."""
    s = np.sort(clamped_log_scales(scales), axis=1)
    return np.pi * np.exp(s[:, 1] + s[:, 2])


def splat_volume(scales: np.ndarray) -> np.ndarray:
    """Product of the three standard deviations (float64), from log-scales."""
    return np.exp(clamped_log_scales(scales).sum(1))


def group_moments(group: np.ndarray, n_groups: int, w: np.ndarray, means: np.ndarray, cov6: np.ndarray,
                  anchor: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masses (M,), means (M, 3) and covariances (M, 6) of ``n_groups`` groups.

    ``group[i]`` is the group of Gaussian ``i``; ``anchor`` (M, 3) is any point near each group
    (e.g. the survivor's centre): offsets are taken from it so that large world coordinates do not
    eat the precision of small covariances. Groups with zero total mass use equal weights.
    """
    group = np.asarray(group, np.int64)
    w = np.asarray(w, np.float64)
    wsum = np.bincount(group, weights=w, minlength=n_groups)
    empty = ~(wsum > 0)
    if empty.any():  # fall back to unit masses inside zero-mass groups
        w = np.where(empty[group], 1.0, w)
        wsum = np.bincount(group, weights=w, minlength=n_groups)
    lib = native_lib()
    if lib is not None and len(group):
        acc = np.zeros((n_groups, 10))
        anc = np.ascontiguousarray(anchor, np.float64)
        lib.group_accum(ptr(np.ascontiguousarray(group)), len(group), ptr(np.ascontiguousarray(w)),
                        ptr(np.ascontiguousarray(means, np.float32)), ptr(np.ascontiguousarray(cov6, np.float64)),
                        ptr(anc), ptr(acc))
        wsum = acc[:, 0]
        mu_off = acc[:, 1:4] / wsum[:, None]
        cov = acc[:, 4:] / wsum[:, None]
        for c, (i, j) in enumerate(COV6):
            cov[:, c] -= mu_off[:, i] * mu_off[:, j]
        return wsum, anc + mu_off, cov
    d = means.astype(np.float64) - anchor[group]
    mu_off = np.empty((n_groups, 3))
    for a in range(3):
        mu_off[:, a] = np.bincount(group, weights=w * d[:, a], minlength=n_groups) / wsum
    # second moments about the anchor, then shift to the group mean
    cov = np.empty((n_groups, 6))
    for c, (i, j) in enumerate(COV6):
        second = np.bincount(group, weights=w * (cov6[:, c] + d[:, i] * d[:, j]), minlength=n_groups) / wsum
        cov[:, c] = second - mu_off[:, i] * mu_off[:, j]
    return wsum, anchor + mu_off, cov


def cov6_to_rotation_scales(cov6: np.ndarray, chunk: int = 1 << 19) -> Tuple[np.ndarray, np.ndarray]:
    """(M, 6) covariances -> (M, 4) unit wxyz quaternions and (M, 3) log-scales (float32).

    Eigenvalues are clamped to ``max(MIN_ABS_STD, MIN_REL_STD * largest_std)**2`` so identical or
    perfectly flat groups stay finite; the eigenvector frame is made right-handed.
    """
    m = len(cov6)
    quats = np.empty((m, 4), np.float32)
    scales = np.empty((m, 3), np.float32)
    for a in range(0, m, chunk):
        b = min(a + chunk, m)
        lib = native_lib()
        if lib is not None:
            c6 = np.ascontiguousarray(cov6[a:b], np.float64)
            val = np.empty((b - a, 3))
            vec = np.empty((b - a, 3, 3))
            run_parallel(lambda p, r: lib.eig3_rows(ptr(c6), p, r, ptr(val), ptr(vec)), split(b - a, 8))
        else:
            mat = cov6_to_mat(cov6[a:b])
            mat = np.where(np.isfinite(mat), mat, 0.0)
            val, vec = np.linalg.eigh(mat)
        std = np.sqrt(np.maximum(val, 0.0))
        floor = np.maximum(MIN_ABS_STD, MIN_REL_STD * std[:, 2:3])
        std = np.maximum(std, floor)
        flip = np.linalg.det(vec) < 0
        vec[flip, :, 0] *= -1.0
        quats[a:b] = rotmat_to_quat(vec)
        scales[a:b] = np.log(std)
    return quats, scales


def weighted_group_mean(group: np.ndarray, n_groups: int, w: np.ndarray, wsum: np.ndarray,
                        values: np.ndarray) -> np.ndarray:
    """Per-group w-weighted mean of ``values`` (N, C) -> (M, C) float32. ``wsum`` from the same w."""
    values = values.reshape(len(values), -1)
    out = np.empty((n_groups, values.shape[1]), np.float32)
    safe = np.where(wsum > 0, wsum, 1.0)
    for c in range(values.shape[1]):
        out[:, c] = np.bincount(group, weights=w * values[:, c], minlength=n_groups) / safe
    return out

