"""Vector quantisation by k-means (deterministic, chunked, torch on CPU).

:func:`kmeans` fits ``k`` centres to (a seeded sample of) the rows of ``x`` with Lloyd iterations;
:func:`assign` labels rows with their nearest centre in chunks, so memory stays
``O(chunk * k)`` whatever ``N`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where k-means runs, so reading a bundle never loads it
    import torch

_CHUNK = 2048


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index (int64) of the nearest centre (squared Euclidean) for each row of ``x``."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    ct = torch.from_numpy(np.ascontiguousarray(centres, np.float32))
    return _assign_t(xt, ct).numpy()


def _assign_t(xt: "torch.Tensor", ct: "torch.Tensor") -> "torch.Tensor":
    import torch

    c2 = (ct * ct).sum(1)
    out = torch.empty(len(xt), dtype=torch.int64)
    for s in range(0, len(xt), _CHUNK):
        xs = xt[s:s + _CHUNK]
        d = c2[None, :] - 2.0 * (xs @ ct.T)  # |x|² is constant per row
        out[s:s + _CHUNK] = d.argmin(1)
    return out


def kmeans(x: np.ndarray, k: int, iters: int = 8, seed: int = 0, sample: int | None = None):
    """Fit ``k`` centres to the rows of ``x`` (N, D).

    Returns ``(centres float32 (k', D), labels int64 (N,))`` with ``k' = min(k, N)``. Training uses
    at most ``sample`` rows (default ``8 k``, at least 16384) drawn with ``seed``; initial centres are distinct random training rows;
    a centre that loses all its rows is re-seeded at the row worst served by its centre.
    The result depends only on ``x``, ``k``, ``iters``, ``seed`` and ``sample``.
    """
    import torch

    x = np.ascontiguousarray(x, np.float32)
    n = len(x)
    if n == 0:
        return np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.int64)
    k = max(1, min(int(k), n))
    sample = max(8 * k, 16384) if sample is None else int(sample)
    rng = np.random.default_rng(seed)
    train = x if n <= sample else x[np.sort(rng.choice(n, sample, replace=False))]
    tt = torch.from_numpy(train)
    ct = tt[torch.from_numpy(rng.choice(len(train), k, replace=False))].clone()
    for _ in range(iters):
        lab = _assign_t(tt, ct)
        sums = torch.zeros_like(ct).index_add_(0, lab, tt)
        cnt = torch.bincount(lab, minlength=k)
        full = cnt > 0
        ct[full] = sums[full] / cnt[full, None].to(ct.dtype)
        empty = torch.nonzero(~full).flatten()
        if len(empty):
            err = ((tt - ct[lab]) ** 2).sum(1)
            worst = torch.argsort(err, descending=True, stable=True)[: len(empty)]
            ct[empty[: len(worst)]] = tt[worst]
    return ct.numpy().copy(), assign(x, ct.numpy())
