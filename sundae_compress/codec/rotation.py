"""Smallest-three quaternion coding.

A unit quaternion and its negation are the same rotation, so after flipping the sign to make the
component of largest magnitude positive, that component is implied by the other three
(``sqrt(1 - a² - b² - c²)``) and only its index (2 bits) and the other three are stored. Those lie in
``[-1/√2, 1/√2]`` and are quantised linearly with ``bits`` bits each.
"""

from __future__ import annotations

import numpy as np

from .quantise import dequantise_linear, quantise_linear

#: Bound of the three stored components.
S3_RANGE = float(1.0 / np.sqrt(2.0))


def encode_smallest_three(quats: np.ndarray, bits: int):
    """(N, 4) wxyz quaternions (any norm) -> (index uint8 (N,), codes uint32 (N, 3)).

    ``index`` is the position (0=w .. 3=z) of the dropped largest component; ``codes`` are the other
    three components in their original order, quantised over ``[-1/√2, 1/√2]``.
    """
    q = np.asarray(quats, np.float64).reshape(-1, 4)
    n = np.linalg.norm(q, axis=1, keepdims=True)
    bad = ~(n[:, 0] > 1e-12) | ~np.isfinite(n[:, 0])
    q = np.where(bad[:, None], np.array([1.0, 0, 0, 0]), q / np.where(bad[:, None], 1.0, n))
    idx = np.argmax(np.abs(q), axis=1)
    rows = np.arange(len(q))
    q *= np.where(q[rows, idx] < 0, -1.0, 1.0)[:, None]
    keep = np.ones((len(q), 4), bool)
    keep[rows, idx] = False
    rest = q[keep].reshape(-1, 3)
    return idx.astype(np.uint8), quantise_linear(rest, -S3_RANGE, S3_RANGE, bits)


def decode_smallest_three(index: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`encode_smallest_three`: (N, 4) float32 unit wxyz quaternions."""
    index = np.asarray(index).astype(np.int64)
    if index.size and int(index.max()) > 3:
        raise ValueError("smallest-three index out of range")
    rest = dequantise_linear(codes, -S3_RANGE, S3_RANGE, bits).astype(np.float64).reshape(-1, 3)
    largest = np.sqrt(np.maximum(0.0, 1.0 - (rest * rest).sum(1)))
    n = len(rest)
    q = np.empty((n, 4))
    keep = np.ones((n, 4), bool)
    keep[np.arange(n), index] = False
    q[keep] = rest.ravel()
    q[np.arange(n), index] = largest
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return q.astype(np.float32)
