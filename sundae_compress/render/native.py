"""The native tile rasteriser (``sundae_compress/render/csrc``, built by ``pip install``) and its
Python side.

The C sources are compiled by the package build into the extension ``render._raster`` (see
``setup.py``), opened with :mod:`ctypes` by :class:`sundae_compress._native.NativeLibrary` (shared
with the prune kernel); its functions take torch CPU buffers by pointer and release the GIL.

:func:`lib` returns the library, or ``None`` when the torch compositor must run: the extension is
missing (reported once on stderr as a warning: the torch path is several times slower), or a test
chose the torch path with :func:`use`. :data:`ran` records which compositor ran ("native" /
"torch"), so tests can assert which path actually ran.

:func:`composite_native` is the drop-in for :func:`~.rasterize.composite` on CPU float32 tensors:
without gradients it is a plain C forward pass; when gradients are needed it is an autograd
function whose backward is the C backward pass (per-thread gradient buffers, summed).
"""

from __future__ import annotations

import ctypes
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Set

import torch

from .._native import NativeLibrary

__all__ = ["lib", "available", "use", "ran", "supports", "composite_native", "NativeRasterMissing", "TILE"]

TILE = 16


class NativeRasterMissing(RuntimeWarning):
    """The native rasteriser is not built; the (slower) torch compositor runs instead."""


#: Compositors run since the last reset ("native" and/or "torch"); tests clear and inspect it.
ran: Set[str] = set()

_P = ctypes.c_void_p
_I64, _INT = ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "raster_bin_bound": (_I64, [_P, _I64, _INT]),
    "raster_bin": (_I64, [_P, _P, _I64, _INT, _INT, _INT, _P, _P, _P]),
    "raster_forward": (_INT, [_P, _P, _P, _P, _P, _INT, _INT, _INT, _INT, _P, _P, _P, _P, _P]),
    "raster_backward": (_INT, [_P, _P, _P, _P, _P, _INT, _INT, _INT, _INT, _P, _P, _P, _P, _P, _P]),
}


_NATIVE = NativeLibrary(f"{__package__}._raster", _SIGNATURES, what="native rasteriser",
                        fallback="the torch compositor, several times slower on CPU",
                        category=NativeRasterMissing)
available = _NATIVE.available
use = _NATIVE.use


def lib() -> Optional[ctypes.CDLL]:
    """The native rasteriser, or None when the torch compositor must run. ``use(False)`` chooses
    the torch compositor; ``use(True)`` raises if the rasteriser is not built."""
    return _NATIVE.get(stacklevel=3)


def supports(proj, values: torch.Tensor) -> bool:
    """Whether the C path can composite these tensors: CPU, float32."""
    ts = (proj.mean2d, proj.conic, proj.opacity, values)
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in ts)


# -- threads ------------------------------------------------------------------------------------
_POOL: Optional[ThreadPoolExecutor] = None
_POOL_N = 0
_POOL_LOCK = threading.Lock()


def _threads(n_tiles: int) -> int:
    """Threads to use: torch's setting (the caller's budget; torch is idle while C runs)."""
    return max(1, min(torch.get_num_threads(), n_tiles, 16))


def _run(fn, n: int) -> None:
    """fn(k, n) for k in range(n), on n threads (ctypes calls release the GIL)."""
    global _POOL, _POOL_N
    if n == 1:
        fn(0, 1)
        return
    with _POOL_LOCK:
        if _POOL is None or _POOL_N < n:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL, _POOL_N = ThreadPoolExecutor(n, thread_name_prefix="sundae-raster"), n
        pool = _POOL
    futs = [pool.submit(fn, k, n) for k in range(n)]
    for f in futs:
        f.result()


def _ptr(t: torch.Tensor):
    return ctypes.c_void_p(t.data_ptr())


# -- binning and the passes ------------------------------------------------------------------------
class _Tiles:
    """Per-tile Gaussian lists (CSR) of one view."""

    def __init__(self, L, P: torch.Tensor, bbox: torch.Tensor, width: int, height: int):
        self.width, self.height = width, height
        self.nt = ((width + TILE - 1) // TILE) * ((height + TILE - 1) // TILE)
        V = P.shape[0]
        bound = int(L.raster_bin_bound(_ptr(bbox), V, TILE))
        flags = torch.empty(max(bound, 1), dtype=torch.uint8)
        self.ids = torch.empty(max(bound, 1), dtype=torch.int32)
        self.off = torch.empty(self.nt + 1, dtype=torch.int64)
        n = int(L.raster_bin(_ptr(bbox), _ptr(P), V, width, height, TILE, _ptr(flags), _ptr(self.off),
                             _ptr(self.ids)))
        if n < 0:
            raise MemoryError("native rasteriser: out of memory while binning")
        self.n_entries = n


def _forward(L, tiles: _Tiles, P, bbox, vals, keep: bool):
    W, H = tiles.width, tiles.height
    C1 = vals.shape[1]
    out = torch.empty(H * W, C1, dtype=torch.float32)
    final_t = torch.empty(H * W, dtype=torch.float64) if keep else None
    ncontrib = torch.empty(H * W, dtype=torch.int32) if keep else None
    n = _threads(tiles.nt)
    live = torch.zeros(n, dtype=torch.int64)
    codes = [0] * n
    nxt = torch.zeros(1, dtype=torch.int64)  # shared tile counter

    def work(k, _n):
        codes[k] = L.raster_forward(_ptr(tiles.off), _ptr(tiles.ids), _ptr(P), _ptr(bbox), _ptr(vals), C1, W, H,
                                    TILE, _ptr(nxt), _ptr(out), _ptr(final_t) if keep else None,
                                    _ptr(ncontrib) if keep else None, _ptr(live[k:k + 1]))

    _run(work, n)
    if any(codes):
        raise MemoryError("native rasteriser: out of memory")
    return out, final_t, ncontrib, int(live.sum())


class _NativeComposite(torch.autograd.Function):
    """out = composite(P, vals) with the C forward and backward passes."""

    @staticmethod
    def forward(ctx, P, vals, bbox, width, height, stats):
        L = _NATIVE.load()
        t0 = time.perf_counter()
        tiles = _Tiles(L, P, bbox, width, height)
        t1 = time.perf_counter()
        out, final_t, ncontrib, live = _forward(L, tiles, P, bbox, vals, keep=True)
        stats.update(n_tile_entries=tiles.n_entries, n_pairs=live, t_bin=t1 - t0,
                     t_raster=time.perf_counter() - t1)
        ctx.tiles = tiles
        ctx.save_for_backward(P, vals, bbox, final_t, ncontrib)
        return out

    @staticmethod
    def backward(ctx, gout):
        P, vals, bbox, final_t, ncontrib = ctx.saved_tensors
        tiles = ctx.tiles
        L = _NATIVE.load()
        W, H = tiles.width, tiles.height
        V, C1 = vals.shape
        gout = gout.detach().to(torch.float32).contiguous()
        n = _threads(tiles.nt)
        gP = torch.zeros(n, V, 6, dtype=torch.float64)
        gv = torch.zeros(n, V, C1, dtype=torch.float64)
        codes = [0] * n
        nxt = torch.zeros(1, dtype=torch.int64)  # shared tile counter

        def work(k, _n):
            codes[k] = L.raster_backward(_ptr(tiles.off), _ptr(tiles.ids), _ptr(P), _ptr(bbox), _ptr(vals), C1, W, H,
                                         TILE, _ptr(nxt), _ptr(gout), _ptr(final_t), _ptr(ncontrib), _ptr(gP[k]),
                                         _ptr(gv[k]))

        _run(work, n)
        if any(codes):
            raise MemoryError("native rasteriser: out of memory")
        gP = gP.sum(0).to(P.dtype) if ctx.needs_input_grad[0] else None
        gv = gv.sum(0).to(vals.dtype) if ctx.needs_input_grad[1] else None
        return gP, gv, None, None, None, None


def composite_native(proj, values: torch.Tensor, width: int, height: int,
                     stats: Optional[Dict] = None) -> torch.Tensor:
    """:func:`~.rasterize.composite` in C (CPU float32 tensors, see :func:`supports`). Returns
    (H*W, C+1): the weighted sums of the values and, in the last column, the accumulated alpha."""
    L = _NATIVE.load()
    if L is None:
        raise RuntimeError(f"the native rasteriser is not built ({_NATIVE.error})")
    info: Dict = {}
    cols = [proj.mean2d[:, 0], proj.mean2d[:, 1], proj.conic[:, 0], proj.conic[:, 1], proj.conic[:, 2],
            proj.opacity]
    need_grad = torch.is_grad_enabled() and (any(c.requires_grad for c in cols) or values.requires_grad)
    bbox = proj.bbox.to(torch.int64).contiguous()
    vals1 = torch.cat([values, torch.ones_like(values[:, :1])], 1).contiguous()
    if need_grad:
        P = torch.stack(cols, 1).contiguous()
        out = _NativeComposite.apply(P, vals1, bbox, width, height, info)
    else:
        with torch.no_grad():
            P = torch.stack(cols, 1).contiguous()
            t0 = time.perf_counter()
            tiles = _Tiles(L, P, bbox, width, height)
            t1 = time.perf_counter()
            out, _, _, live = _forward(L, tiles, P, bbox, vals1.detach(), keep=False)
            info.update(n_tile_entries=tiles.n_entries, n_pairs=live, t_bin=t1 - t0,
                        t_raster=time.perf_counter() - t1)
    ran.add("native")
    if stats is not None:
        stats.update(compositor="native", **info)
    return out
