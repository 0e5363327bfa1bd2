"""Scalar quantisation: a linear quantiser and a 1-D k-means codebook, plus byte planes.

Every quantiser here maps floats to unsigned integers of ``bits`` bits and back; there is one
implementation per kind, parameterised by ``bits`` (1..16).

* linear: ``q = round((x - lo) / (hi - lo) * (2**bits - 1))`` clipped; decode
  ``lo + q * (hi - lo) / (2**bits - 1)``. When ``hi == lo`` every value decodes to ``lo``.
* codebook: a sorted table of ``2**bits`` float32 centres fitted by 1-D k-means (Lloyd on sorted
  data, initialised at quantiles); a value maps to its nearest centre.

Integers are stored as little-endian byte planes (:func:`to_planes`): for each column, the
lowest byte of every row, then the next byte, ... . Zstandard compresses slowly varying high bytes
far better when they are contiguous.
"""

from __future__ import annotations

import numpy as np


def levels(bits: int) -> int:
    """Largest integer code for ``bits`` bits."""
    if not 1 <= int(bits) <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    return (1 << int(bits)) - 1


def nbytes_for(bits: int) -> int:
    """Bytes (planes) needed per value of ``bits`` bits."""
    return (int(bits) + 7) // 8


# -- linear ------------------------------------------------------------------------------------

def quantise_linear(x: np.ndarray, lo, hi, bits: int) -> np.ndarray:
    """Floats -> uint32 codes in ``[0, 2**bits - 1]`` (``lo``/``hi`` broadcast against ``x``)."""
    m = levels(bits)
    lo = np.asarray(lo, np.float64)
    span = np.asarray(hi, np.float64) - lo
    t = (np.asarray(x, np.float64) - lo) / np.where(span > 0, span, 1.0)
    return np.clip(np.rint(t * m), 0, m).astype(np.uint32)


def dequantise_linear(q: np.ndarray, lo, hi, bits: int) -> np.ndarray:
    """Codes -> float32 (inverse of :func:`quantise_linear` up to half a step)."""
    m = levels(bits)
    lo = np.asarray(lo, np.float64)
    span = np.asarray(hi, np.float64) - lo
    return (lo + np.asarray(q, np.float64) * (span / m)).astype(np.float32)


# -- 1-D codebook ------------------------------------------------------------------------------

def fit_codebook(x: np.ndarray, bits: int, iters: int = 12) -> np.ndarray:
    """Sorted float32 codebook of ``2**bits`` centres for the values in ``x`` (1-D k-means).

    Deterministic: starts from evenly spaced quantiles and runs Lloyd iterations using the sorted
    data (each cluster is a contiguous run, found with ``searchsorted``).
    """
    k = levels(bits) + 1
    v = np.sort(np.asarray(x, np.float64).ravel())
    if v.size == 0:
        return np.zeros(k, np.float32)
    c = np.quantile(v, (np.arange(k) + 0.5) / k)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    for _ in range(iters):
        edges = np.searchsorted(v, (c[1:] + c[:-1]) / 2)
        start = np.concatenate([[0], edges])
        end = np.concatenate([edges, [v.size]])
        cnt = end - start
        sums = csum[end] - csum[start]
        c = np.where(cnt > 0, sums / np.maximum(cnt, 1), c)
        c = np.sort(c)
    return c.astype(np.float32)


def quantise_codebook(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of a sorted ``codebook`` for each value (uint32)."""
    cb = np.asarray(codebook, np.float64)
    mids = (cb[1:] + cb[:-1]) / 2
    return np.searchsorted(mids, np.asarray(x, np.float64)).astype(np.uint32)


def dequantise_codebook(q: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Codes -> float32 centres (raises ValueError for an index outside the codebook)."""
    q = np.asarray(q)
    if q.size and int(q.max()) >= len(codebook):
        raise ValueError("codebook index out of range")
    return np.asarray(codebook, np.float32)[q]


# -- byte planes -------------------------------------------------------------------------------

def to_planes(q: np.ndarray, bits: int) -> bytes:
    """(N,) or (N, C) unsigned codes -> bytes: per column, little-endian byte planes."""
    q = np.asarray(q, np.uint64)
    if q.ndim == 1:
        q = q[:, None]
    nb = nbytes_for(bits)
    out = []
    for c in range(q.shape[1]):
        col = q[:, c]
        for p in range(nb):
            out.append(((col >> np.uint64(8 * p)) & np.uint64(0xFF)).astype(np.uint8).tobytes())
    return b"".join(out)


def from_planes(buf: bytes, n: int, cols: int, bits: int) -> np.ndarray:
    """Inverse of :func:`to_planes`: (n, cols) uint64 codes (raises ValueError on a size mismatch
    or a code wider than ``bits``)."""
    nb = nbytes_for(bits)
    if len(buf) != n * cols * nb:
        raise ValueError(f"expected {n * cols * nb} bytes of planes, got {len(buf)}")
    a = np.frombuffer(buf, np.uint8).reshape(cols, nb, n).astype(np.uint64)
    q = np.zeros((n, cols), np.uint64)
    for p in range(nb):
        q |= a[:, p, :].T << np.uint64(8 * p)
    if q.size and int(q.max()) > levels(bits):
        raise ValueError(f"code wider than {bits} bits")
    return q


def planes_length(n: int, cols: int, bits: int) -> int:
    """Byte length of :func:`to_planes` output for ``n`` rows of ``cols`` columns."""
    return n * cols * nbytes_for(bits)


# -- row-major (interleaved) layout ------------------------------------------------------------

def to_rows(q: np.ndarray, bits: int) -> bytes:
    """(N, C) unsigned codes -> bytes, row by row: each value as ``ceil(bits/8)`` little-endian bytes.

    Used where whole rows repeat (an exact duplicate row is then one contiguous match for zstd)."""
    q = np.asarray(q, np.uint64)
    q = q[:, None] if q.ndim == 1 else q
    dt = {1: "<u1", 2: "<u2"}.get(nbytes_for(bits))
    if dt is None:
        raise ValueError("row layout supports codes of up to 16 bits")
    return np.ascontiguousarray(q.astype(dt)).tobytes()


def from_rows(buf: bytes, n: int, cols: int, bits: int) -> np.ndarray:
    """Inverse of :func:`to_rows`: (n, cols) uint64 codes (ValueError on a size mismatch or a code
    wider than ``bits``)."""
    nb = nbytes_for(bits)
    if nb > 2:
        raise ValueError("row layout supports codes of up to 16 bits")
    if len(buf) != n * cols * nb:
        raise ValueError(f"expected {n * cols * nb} bytes of rows, got {len(buf)}")
    q = np.frombuffer(buf, {1: "<u1", 2: "<u2"}[nb]).reshape(n, cols).astype(np.uint64)
    if q.size and int(q.max()) > levels(bits):
        raise ValueError(f"code wider than {bits} bits")
    return q
