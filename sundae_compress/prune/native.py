"""Loader of the native kernel (``sundae_compress/prune/csrc``, built by ``pip install``).

The C sources are compiled by the package build into the extension ``prune._kernel`` (see
``setup.py``), opened with :mod:`ctypes` by :class:`sundae_compress._native.NativeLibrary` (shared
with the rasteriser); its functions work on numpy buffers passed by pointer.

:func:`lib` returns the library, or ``None`` when the numpy / scipy fallbacks must run: the
extension is missing (a source tree nobody built: ``pip install -e .`` builds it), or a test chose
the fallback with :func:`use`. A missing extension is reported once on stderr as a warning (the
fallback is several times slower on large scenes). :data:`ran` records which backend each caller got
("native" / "numpy"), so tests can assert which path actually ran.

Helpers shared by the callers (graph, moments, collapse): :func:`ptr`, :func:`num_threads`,
:func:`split`, :func:`run_parallel`.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Set

import numpy as np

from .._native import NativeLibrary

__all__ = ["lib", "available", "use", "ran", "ptr", "num_threads", "split", "run_parallel",
           "NativeKernelMissing"]


class NativeKernelMissing(RuntimeWarning):
    """The native kernel is not built; the (slower) numpy / scipy paths run instead."""


#: Backends handed out since the last reset ("native" and/or "numpy"); tests clear and inspect it.
ran: Set[str] = set()

_P = ctypes.c_void_p
_I64, _F64, _INT = ctypes.c_int64, ctypes.c_double, ctypes.c_int
#: name: (restype, argtypes) of every exported function.
_SIGNATURES = {
    # knn.c
    "grid_build": (_I64, [_P, _I64, _P, _F64, _P, _INT, _P, _P, _P, _P]),
    "knn_cells": (_INT, [_P, _P, _P, _I64, _P, _P, _F64, _INT, _F64, _I64, _I64, _P, _P, _P]),
    "knn_points": (None, [_P, _P, _P, _I64, _P, _P, _F64, _INT, _F64, _P, _I64, _P, _P, _P]),
    "edge_stats": (None, [_P, _I64, _I64, _INT, _F64, _P]),
    "laplace_scores": (None, [_P, _P, _P, _I64, _I64, _INT, _F64, _F64, _P, _P]),
    "minmax3": (None, [_P, _I64, _I64, _P]),
    "nn_query_sorted": (_INT, [_P, _P, _P, _I64, _P, _P, _F64, _P, _I64, _P, _P]),
    # merge.c
    "cov6_rows": (None, [_P, _P, _I64, _I64, _P]),
    "group_accum": (None, [_P, _I64, _P, _P, _P, _P, _P]),
    "eig3_rows": (None, [_P, _I64, _I64, _P, _P]),
    "edge_cost_rows": (None, [_P, _P, _I64, _I64, _P, _P, _P, _P, _P, _INT, _F64, _F64, _P]),
    "argsort_f64": (_INT, [_P, _I64, _P]),
    "knn_edges": (_I64, [_P, _I64, _INT, _P, _P]),
    "greedy_match": (_I64, [_P, _P, _P, _I64, _I64, _I64, _P]),
}


_NATIVE = NativeLibrary(f"{__package__}._kernel", _SIGNATURES, what="native kernel",
                        fallback="the numpy/scipy fallback, several times slower on large scenes",
                        category=NativeKernelMissing)
available = _NATIVE.available
use = _NATIVE.use


def lib() -> Optional[ctypes.CDLL]:
    """The native kernel, or None when the numpy / scipy fallback must run (recorded in :data:`ran`).
    ``use(False)`` chooses the fallback; ``use(True)`` raises if the kernel is not built."""
    out = _NATIVE.get(stacklevel=2)
    ran.add("numpy" if out is None else "native")
    return out


def ptr(a: np.ndarray):
    """ctypes pointer to a numpy array's data (the caller keeps the array alive)."""
    return a.ctypes.data_as(ctypes.c_void_p)


def num_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def split(total: int, parts: int):
    """``parts`` contiguous (start, stop) ranges covering ``range(total)`` (empty ones dropped)."""
    edges = np.linspace(0, total, parts + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def run_parallel(fn, ranges):
    """``fn(*r)`` for every tuple in ``ranges`` on up to :func:`num_threads` threads (ctypes calls
    release the GIL)."""
    nt = num_threads()
    if nt == 1 or len(ranges) <= 1:
        for r in ranges:
            fn(*r)
        return
    with ThreadPoolExecutor(nt) as ex:
        list(ex.map(lambda r: fn(*r), ranges))
