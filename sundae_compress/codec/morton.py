"""Morton (Z-order) codes for integer 3D positions.

A Morton code interleaves the bits of the three coordinates (bit ``i`` of x goes to bit ``3i``,
of y to ``3i+1``, of z to ``3i+2``), so sorting by it walks space along a Z curve and neighbours in
the sorted order are near each other in space. Coordinates may use up to 21 bits (63-bit codes).
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 21

_U = np.uint64
# (shift, mask) steps that spread 21 bits so that two zero bits follow each one.
_SPREAD = [
    (32, 0x1F00000000FFFF),
    (16, 0x1F0000FF0000FF),
    (8, 0x100F00F00F00F00F),
    (4, 0x10C30C30C30C30C3),
    (2, 0x1249249249249249),
]


def _spread(v: np.ndarray) -> np.ndarray:
    v = v.astype(_U) & _U(0x1FFFFF)
    for shift, mask in _SPREAD:
        v = (v | (v << _U(shift))) & _U(mask)
    return v


def _compact(v: np.ndarray) -> np.ndarray:
    v = v.astype(_U) & _U(0x1249249249249249)
    for shift, mask in reversed(_SPREAD):
        # undo step k: mask with the previous step's mask after folding the shifted copy back
        v = v | (v >> _U(shift))
        v &= _U(_prev_mask(shift))
    return v


def _prev_mask(shift: int) -> int:
    masks = [0x1FFFFF] + [m for _, m in _SPREAD]
    shifts = [s for s, _ in _SPREAD]
    return masks[shifts.index(shift)]


def morton_encode(q: np.ndarray) -> np.ndarray:
    """(N, 3) non-negative integers < 2**21 -> (N,) uint64 Morton codes."""
    q = np.asarray(q)
    if q.ndim != 2 or q.shape[1] != 3:
        raise ValueError(f"morton_encode expects (N, 3) integers, got {q.shape}")
    return _spread(q[:, 0]) | (_spread(q[:, 1]) << _U(1)) | (_spread(q[:, 2]) << _U(2))


def morton_decode(codes: np.ndarray) -> np.ndarray:
    """(N,) uint64 Morton codes -> (N, 3) uint32 coordinates (inverse of :func:`morton_encode`)."""
    c = np.asarray(codes, dtype=_U)
    return np.stack([_compact(c), _compact(c >> _U(1)), _compact(c >> _U(2))], 1).astype(np.uint32)


def morton_order(q: np.ndarray) -> np.ndarray:
    """Stable permutation that sorts integer positions ``q`` (N, 3) along the Morton curve."""
    return np.argsort(morton_encode(q), kind="stable")
