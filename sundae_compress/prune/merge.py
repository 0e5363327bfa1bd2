"""Merge-aware pruning: fold the Gaussians a selector removed into the survivors.

Selection alone (``prune.select``) throws 90 % of a scene away and the rest goes dark and full of
holes. :func:`merge_into` keeps the survivors' identity but hands every removed Gaussian to a
nearby survivor and replaces each group by its moment-matched Gaussian
(:mod:`sundae_compress.prune.moments`); :func:`prune` is select-then-merge in one call.

Two modes:

``"assign"``
    every removed Gaussian joins the survivor that is nearest in a scale-aware metric among its
    ``k`` nearest survivor centres; one moment-matching pass. Fast: the default Euclidean metric is
    one exact nearest-centre query on the C grid kernel (:func:`.graph.nearest_points`), and the
    moments, covariances and 3×3 eigen-decompositions run in C (:mod:`.moments`).
``"collapse"``
    iterative pairwise edge collapse on a kNN graph (:mod:`sundae_compress.prune.collapse`) down to
    the count; no selector is involved (:func:`prune` calls it directly).

The group maths (mass, moment matching, opacity) is :mod:`.group`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import SundaeError
from ..gaussians import GaussianSet
from .group import MASS_KINDS, OPACITY_RULES, gaussian_mass, merge_groups  # noqa: F401 - re-exported

__all__ = ["merge_into", "prune", "assign_to_survivors", "merge_groups", "gaussian_mass", "MASS_KINDS",
           "OPACITY_RULES", "MERGE_MODES"]

def _check_keep(keep, n: int) -> np.ndarray:
    keep = np.asarray(keep)
    if keep.dtype == bool:
        if keep.shape != (n,):
            raise SundaeError(f"keep mask has {keep.shape[0]} entries for {n} Gaussians")
        keep = np.flatnonzero(keep)
    keep = keep.astype(np.int64)
    if len(keep) > 1 and not (keep[1:] > keep[:-1]).all():  # already sorted and unique: no sort
        keep = np.unique(keep)
    if len(keep) and (keep[0] < 0 or keep[-1] >= n):
        raise SundaeError(f"keep indices out of range for {n} Gaussians")
    return keep


def assign_to_survivors(gs: GaussianSet, keep: np.ndarray, *, k: int = 8, metric: str = "euclid",
                        max_dist: Optional[float] = None, cov6: Optional[np.ndarray] = None,
                        workers: int = -1, chunk: int = 1 << 20) -> np.ndarray:
    """Survivor slot (0..len(keep)-1) of every Gaussian; -1 for removed ones left unmerged.

    Candidates are the ``k`` survivor centres nearest to each removed Gaussian; among them the
    winner minimises ``|d|^2 / (r_s^2 + r_i^2)`` (``metric="scaled"``, r = root mean square of the
    standard deviations) or ``|d|^2`` (``"euclid"``, the default: nearest centre, one kd-tree
    neighbour; it measured better, 31.81 vs 31.44 dB on guitar 10 % with random survivors, since the
    scaled metric lets large survivors swallow far-away detail). With ``max_dist`` a removed
    Gaussian whose best (normalised) distance exceeds it is dropped instead of merged.
    """
    from scipy.spatial import cKDTree

    n = len(gs)
    slot = np.full(n, -1, np.int64)
    slot[keep] = np.arange(len(keep))
    removed = np.flatnonzero(slot < 0)
    if len(removed) == 0 or len(keep) == 0:
        return slot
    if metric == "euclid" and max_dist is None:
        # nearest survivor centre: the C grid kernel (kd-tree fallback inside)
        from .graph import nearest_points

        slot[removed] = nearest_points(gs.means[keep], gs.means[removed])
        return slot
    k = 1 if metric == "euclid" else max(1, min(k, len(keep)))
    tree = cKDTree(gs.means[keep].astype(np.float64))
    r2 = np.exp(2.0 * gs.scales.astype(np.float64)).mean(1)  # mean variance per Gaussian
    r2_keep = r2[keep]
    for a in range(0, len(removed), chunk):
        idx = removed[a:a + chunk]
        dist, cand = tree.query(gs.means[idx].astype(np.float64), k=k, workers=workers)
        if k == 1:
            dist, cand = dist[:, None], cand[:, None]
        if metric == "euclid":
            score = dist * dist
        elif metric == "scaled":
            score = dist * dist / (r2_keep[cand] + r2[idx, None])
        else:
            raise SundaeError(f"unknown assignment metric {metric!r}")
        best = np.argmin(score, axis=1)
        rows = np.arange(len(idx))
        choice = cand[rows, best]
        if max_dist is not None:
            far = score[rows, best] > max_dist * max_dist
            choice = np.where(far, -1, choice)
        slot[idx] = choice
    return slot


def merge_into(gs: GaussianSet, keep, *, k: int = 8, mass: str = "area", opacity: str = "coverage",
               metric: str = "euclid", max_dist: Optional[float] = None,
               timings: Optional[dict] = None) -> GaussianSet:
    """Survivors ``keep`` (indices or mask) with every removed Gaussian folded into them (the
    ``"assign"`` mode). Returns exactly ``len(unique(keep))`` Gaussians, in the order of the sorted
    survivor indices. (The ``"collapse"`` mode chooses no survivors: see :func:`prune`.)
    """
    n = len(gs)
    keep = _check_keep(keep, n)
    if len(keep) == n or len(keep) == 0:
        return gs.subset(keep)
    import time

    t0 = time.perf_counter()
    slot = assign_to_survivors(gs, keep, k=k, metric=metric, max_dist=max_dist)
    t1 = time.perf_counter()
    used = slot >= 0
    sub = gs.subset(used) if not used.all() else gs
    out = merge_groups(sub, slot[used], len(keep), anchor=gs.means[keep].astype(np.float64), mass=mass,
                       opacity=opacity, meta={"merge": f"assign(k={k}, metric={metric}, mass={mass}, "
                                                       f"opacity={opacity})"})
    if timings is not None:
        timings["assign"] = t1 - t0
        timings["moments"] = time.perf_counter() - t1
    return out


MERGE_MODES = ("assign", "collapse")


def prune(gs: GaussianSet, count: int, *, method: str = "spectral", gamma: float = 0.5,
          merge: Optional[str] = "assign", seed: int = 0, k: int = 16, **merge_opts) -> GaussianSet:
    """Keep exactly ``count`` Gaussians.

    ``merge="assign"``: select survivors with ``method`` (:func:`.select.select`), then fold the rest
    in (:func:`merge_into`); ``None``: selection only; ``"collapse"``: no selection -- pairwise edge
    collapse down to ``count`` (:func:`.collapse.collapse_to`, which takes the ``merge_opts``).
    """
    count = int(count)
    if not 0 <= count <= len(gs):
        raise SundaeError(f"cannot keep {count} of {len(gs)} Gaussians")
    if merge is not None and merge not in MERGE_MODES:
        raise SundaeError(f"unknown merge mode {merge!r}; choose 'assign' or 'collapse'")
    if merge == "collapse":
        from .collapse import collapse_to

        return collapse_to(gs, count, **merge_opts)
    from .select import select

    keep = select(gs, count, method=method, gamma=gamma, k=k, seed=seed)
    if merge is None:
        return gs.subset(keep)
    return merge_into(gs, keep, **merge_opts)
