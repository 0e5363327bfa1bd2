"""Front-to-back alpha compositing of projected Gaussians (differentiable, torch).

Algorithm ("sparse pixel lists"): every visible Gaussian emits one (Gaussian, pixel) pair per
pixel of its alpha ≥ 1/255 bounding box; pairs whose alpha is below 1/255 are dropped; the
rest are sorted by pixel (stable, so each pixel's list stays in the global front-to-back depth
order); the transmittance in front of each pair is the exp of a segmented prefix sum of
log(1 - alpha) (float64 for precision); pairs behind T ≤ 1e-4 are ignored (early termination,
exactly as a tile rasteriser that stops once T drops below 1e-4); weights alpha·T are then
scattered (index_add) into the image.

Memory is bounded: the image is cut into horizontal bands of whole tile rows such that no band
has more than ``max_pairs`` candidate pairs (estimated exactly from the bounding boxes before any
pair is made); each band is composited on its own, so no tensor ever has Gaussians x pixels
entries. Gradients come from autograd through these (elementwise, gather, cumsum, scatter) ops;
with several bands each band's differentiable part is checkpointed (recomputed in backward), so
the memory kept for backward is a few int arrays per live pair plus one band's intermediates.
"""

from __future__ import annotations

import math
import time
from typing import Dict, List, Optional

import torch
from torch.utils.checkpoint import checkpoint

from .native import composite_native, ran as native_ran, supports as native_supports
from .native import lib as native_lib
from .project import ALPHA_MIN, Projected

T_MIN = 1e-4
ALPHA_MAX = 0.99
DEFAULT_MAX_PAIRS = 6_000_000
TILE = 16


def plan_bands(bbox: torch.Tensor, height: int, max_pairs: int, tile: int = TILE) -> List[tuple]:
    """Split rows [0, height) into bands (multiples of ``tile`` rows) with at most ``max_pairs``
    candidate pairs each (a single tile row may exceed it when it alone is over budget)."""
    w = (bbox[:, 1] - bbox[:, 0]).to(torch.float64)
    diff = torch.zeros(height + 1, dtype=torch.float64, device=bbox.device)
    diff.index_add_(0, bbox[:, 2], w)
    diff.index_add_(0, bbox[:, 3], -w)
    rows = torch.cumsum(diff[:-1], 0)
    ntr = (height + tile - 1) // tile
    pad = torch.zeros(ntr * tile, dtype=torch.float64, device=bbox.device)
    pad[:height] = rows
    per_tile_row = pad.reshape(ntr, tile).sum(1).cpu().tolist()
    bands, start, acc = [], 0, 0.0
    for i, cnt in enumerate(per_tile_row):
        if acc > 0 and acc + cnt > max_pairs:
            bands.append((start * tile, min(i * tile, height)))
            start, acc = i, 0.0
        acc += cnt
    bands.append((start * tile, height))
    return bands


def _band_pairs(proj: Projected, r0: int, r1: int, width: int):
    """(gaussian, pixel id) pairs for rows [r0, r1): for every (Gaussian, row) run the exact
    x-interval of its alpha >= 1/255 ellipse, then one pair per pixel of the interval.
    Emitted Gaussian-major, i.e. in front-to-back order; int64 gaussian ids, int32 pixel ids."""
    bbox = proj.bbox
    sel = torch.nonzero((bbox[:, 2] < r1) & (bbox[:, 3] > r0)).squeeze(1)
    if sel.numel() == 0:
        return None
    bsel = bbox.index_select(0, sel)
    y0 = bsel[:, 2].clamp_min(r0)
    h = bsel[:, 3].clamp_max(r1) - y0
    nrun = int(h.sum())
    dev = bbox.device
    rg = torch.repeat_interleave(torch.arange(len(sel), device=dev), h, output_size=nrun)
    row = y0.index_select(0, rg) + (torch.arange(nrun, device=dev) - (torch.cumsum(h, 0) - h).index_select(0, rg))
    gs = sel.index_select(0, rg)
    f64 = torch.float64
    m = proj.mean2d.detach().to(f64).index_select(0, gs)
    cn = proj.conic.detach().to(f64).index_select(0, gs)
    k2 = 2.0 * torch.log(proj.opacity.detach().to(f64).index_select(0, gs) * 255.0).clamp_min(0.0)
    dy = row.to(torch.float64) + 0.5 - m[:, 1]
    A, B, C = cn.unbind(1)
    disc = (B * dy) ** 2 - A * (C * dy * dy - k2)
    sq = torch.sqrt(disc.clamp_min(0.0))
    lo = (-B * dy - sq) / A
    hi = (-B * dy + sq) / A
    xs = torch.ceil(m[:, 0] + lo - 0.5).clamp(0, width)
    xe = (torch.floor(m[:, 0] + hi - 0.5) + 1).clamp(0, width)
    cnt = torch.where(disc >= 0, xe - xs, torch.zeros_like(xs)).clamp_min(0).long()
    total = int(cnt.sum())
    if total == 0:
        return None
    pr = torch.repeat_interleave(torch.arange(nrun, device=dev), cnt, output_size=total)
    base = (row * width + xs.long() - (torch.cumsum(cnt, 0) - cnt)).to(torch.int32)
    pix = base.index_select(0, pr) + torch.arange(total, device=dev, dtype=torch.int32)
    return gs.index_select(0, pr), pix


def _segment_start(pix: torch.Tensor) -> torch.Tensor:
    """Index of the first element of each element's run of equal (sorted) pixel ids."""
    _, inverse, counts = torch.unique_consecutive(pix, return_inverse=True, return_counts=True)
    return (torch.cumsum(counts, 0) - counts)[inverse]


def _pixel_centres(pix: torch.Tensor, width: int, dtype):
    """Pixel-centre coordinates (x + 0.5, y + 0.5) of flat pixel ids (exact in float for ids < 2^24)."""
    if pix.numel() and int(pix[-1]) < (1 << 24) and dtype != torch.float16:
        pf = pix.to(dtype)
        py = torch.floor((pf + 0.5) / width)
        return pf - py * width + 0.5, py + 0.5
    pixl = pix.long()
    py = torch.div(pixl, width, rounding_mode="floor")
    return (pixl - py * width).to(dtype) + 0.5, py.to(dtype) + 0.5


def _gather(cols, g):
    """Per-pair copies of the per-Gaussian columns (each a contiguous 1-D gather: elementwise
    work on contiguous columns is much faster than on strided columns of a (P, 6) gather)."""
    return [c.index_select(0, g) for c in cols]


def _alpha(pg, pix: torch.Tensor, width: int) -> torch.Tensor:
    """Alpha of each pair (0 where below 1/255), from gathered columns (mean x, mean y, conic a,
    b, c, opacity); ``pix`` is sorted, so its last id is the largest."""
    mx, my, ca, cb, cc, op = pg
    cx, cy = _pixel_centres(pix, width, mx.dtype)
    if torch.is_grad_enabled() and any(t.requires_grad for t in pg):
        dx = cx - mx
        dy = cy - my
        power = (dx * dx * ca + dy * dy * cc) * -0.5 - dx * dy * cb  # same rounding as below
        alpha = torch.clamp_max(torch.exp(power) * op, ALPHA_MAX)
        return torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
    # same arithmetic, in place (no graph to keep)
    dx = cx.sub_(mx)
    dy = cy.sub_(my)
    power = dx * dx
    power.mul_(ca)
    q = dy * dy
    power.add_(q.mul_(cc)).mul_(-0.5)
    dx.mul_(dy).mul_(cb)
    power.sub_(dx).exp_().mul_(op).clamp_max_(ALPHA_MAX)
    return power.masked_fill_(power < ALPHA_MIN, 0.0)


def _log_transmittance(alpha: torch.Tensor, seg_start: torch.Tensor) -> torch.Tensor:
    """log of the transmittance in front of each pair (float64): a segmented exclusive prefix
    sum of log(1 - alpha) over each pixel's front-to-back list."""
    la = torch.log1p(-alpha).to(torch.float64)
    cs = torch.cumsum(la, 0) - la
    return cs - cs.index_select(0, seg_start)


def _transmittance(alpha: torch.Tensor, seg_start: torch.Tensor) -> torch.Tensor:
    return torch.exp(_log_transmittance(alpha, seg_start)).to(alpha.dtype)


def _blend_band(params, vals1, g, pix, pixl, width, npix):
    """Differentiable part of one band: alpha, transmittance and weighted scatter of the live pairs."""
    alpha = _alpha(_gather(params, g), pix, width)
    trans = _transmittance(alpha, _segment_start(pix))
    contrib = vals1.index_select(0, g) * (alpha * trans)[:, None]
    return torch.zeros(npix, vals1.shape[1], dtype=vals1.dtype, device=vals1.device).index_add(0, pixl, contrib)


def composite(proj: Projected, values: torch.Tensor, width: int, height: int,
              max_pairs: int = DEFAULT_MAX_PAIRS, stats: Optional[Dict] = None) -> torch.Tensor:
    """Blend per-Gaussian ``values`` (V, C) front to back. Returns (H*W, C+1): the weighted sums
    of the values and, in the last column, the accumulated alpha (no background).

    CPU float32 tensors go to the native tile rasteriser (:mod:`.native`, C forward and, when
    gradients are needed, C backward) when it is built; everything else (CUDA, float64, or the
    kernel not built / switched off with ``native.use(False)``) runs the torch compositor below."""
    if native_supports(proj, values) and native_lib() is not None:
        return composite_native(proj, values, width, height, stats=stats)
    native_ran.add("torch")
    if stats is not None:
        stats["compositor"] = "torch"
    dev, dt = values.device, values.dtype
    C = values.shape[1]
    # per-Gaussian parameters as contiguous columns: mean x, mean y, conic a, b, c, opacity
    params = [proj.mean2d[:, 0].contiguous(), proj.mean2d[:, 1].contiguous(), proj.conic[:, 0].contiguous(),
              proj.conic[:, 1].contiguous(), proj.conic[:, 2].contiguous(), proj.opacity]
    vals1 = torch.cat([values, torch.ones_like(values[:, :1])], 1)
    pieces = []  # one (rows * width, C + 1) block per band; bands tile [0, height)
    bands = plan_bands(proj.bbox, height, max_pairs)
    need_grad = torch.is_grad_enabled() and (any(c.requires_grad for c in params) or vals1.requires_grad)
    n_cand = n_pairs = max_band = 0
    tm = dict(t_pairs=0.0, t_sort=0.0, t_alpha=0.0, t_accum=0.0)
    clock = time.perf_counter
    for r0, r1 in bands:
        t0 = clock()
        pairs = _band_pairs(proj, r0, r1, width)
        t1 = clock()
        tm["t_pairs"] += t1 - t0
        npix = (r1 - r0) * width
        if pairs is None:
            pieces.append(torch.zeros(npix, C + 1, dtype=dt, device=dev))
            continue
        g, pix = pairs
        n_cand += len(g)
        max_band = max(max_band, len(g))
        with torch.no_grad():
            pix, order = torch.sort(pix, stable=True)   # per pixel, front to back
            g = g.index_select(0, order)
            del order
            t2 = clock()
            tm["t_sort"] += t2 - t1
            alpha = _alpha(_gather([c.detach() for c in params], g), pix, width)
            seg = _segment_start(pix)
            log_t = _log_transmittance(alpha, seg)
            live = torch.nonzero((log_t > math.log(T_MIN)) & (alpha > 0)).squeeze(1)
            g, pix = g.index_select(0, live), pix.index_select(0, live)
        n_pairs += len(g)
        if len(g) == 0:
            pieces.append(torch.zeros(npix, C + 1, dtype=dt, device=dev))
            continue
        pixl = pix.long() - r0 * width  # int64 index: index_add is much faster with it than with int32 on CPU
        if need_grad:  # recompute on the live pairs only, now tracking gradients
            if len(bands) > 1:  # keep only one band's intermediates alive: recompute them in backward
                pieces.append(checkpoint(_blend_band, params, vals1, g, pix, pixl, width, npix,
                                         use_reentrant=False))
            else:
                pieces.append(_blend_band(params, vals1, g, pix, pixl, width, npix))
            t3 = clock()
            tm["t_alpha"] += t3 - t2
        else:
            wgt = alpha.index_select(0, live) * torch.exp(log_t.index_select(0, live)).to(dt)
            t3 = clock()
            tm["t_alpha"] += t3 - t2
            pieces.append(torch.zeros(npix, C + 1, dtype=dt, device=dev).index_add(
                0, pixl, vals1.index_select(0, g) * wgt[:, None]))
        tm["t_accum"] += clock() - t3
    if stats is not None:
        stats.update(n_bands=len(bands), max_band_pairs=max_band, n_candidate_pairs=n_cand, n_pairs=n_pairs, **tm)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)
