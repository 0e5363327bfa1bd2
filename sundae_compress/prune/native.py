"""Loader of the native kernel (``sundae_compress/prune/csrc``, built by ``pip install``).

The C sources are compiled by the package build into the extension ``prune._kernel`` (see
``setup.py``). Importing it proves it was built for this interpreter; the same file is then
opened with :mod:`ctypes`, whose functions work on numpy buffers passed by pointer.

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
import importlib
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Optional, Set

import numpy as np

__all__ = ["lib", "available", "use", "ran", "ptr", "num_threads", "split", "run_parallel",
           "NativeKernelMissing"]


class NativeKernelMissing(RuntimeWarning):
    """The native kernel is not built; the (slower) numpy / scipy paths run instead."""


_LOCK = threading.Lock()
_LIB: Optional[ctypes.CDLL] = None
_TRIED = False
_ERROR = ""
_FORCED: Optional[bool] = None  # None: native if built; False: numpy; True: native (must exist)
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


def _load() -> Optional[ctypes.CDLL]:
    global _LIB, _TRIED, _ERROR
    with _LOCK:
        if not _TRIED:
            _TRIED = True
            try:
                kernel = importlib.import_module(f"{__package__}._kernel")  # built for this interpreter?
                cdll = ctypes.CDLL(kernel.__file__)
                for name, (res, args) in _SIGNATURES.items():
                    f = getattr(cdll, name)
                    f.restype, f.argtypes = res, args
                _LIB = cdll
            except (ImportError, OSError, AttributeError) as e:
                _ERROR = f"{type(e).__name__}: {e}"
    return _LIB


def available() -> bool:
    """Whether the native kernel is built and loadable (regardless of :func:`use`)."""
    return _load() is not None


def lib() -> Optional[ctypes.CDLL]:
    """The native kernel, or None when the numpy / scipy fallback must run (recorded in :data:`ran`)."""
    if _FORCED is False:
        ran.add("numpy")
        return None
    out = _load()
    if out is None:
        if _FORCED:
            raise RuntimeError(f"the native kernel is not built ({_ERROR}); run `pip install -e .`")
        warnings.warn(f"sundae-compress: native kernel not built ({_ERROR}); using the numpy/scipy "
                      "fallback, several times slower on large scenes. Run `pip install -e .` to build it.",
                      NativeKernelMissing, stacklevel=2)
        warnings.filterwarnings("ignore", category=NativeKernelMissing)  # once per process
        ran.add("numpy")
        return None
    ran.add("native")
    return out


@contextmanager
def use(native: bool):
    """Run the enclosed code with (``True``) or without (``False``) the native kernel (tests,
    benchmarks). ``True`` raises if the kernel is not built."""
    global _FORCED
    old = _FORCED
    _FORCED = bool(native)
    try:
        yield
    finally:
        _FORCED = old


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
