"""Quantisation codec: Morton order, scalar quantisers, smallest-three rotations, k-means VQ.

Public API: :class:`CodecSettings`, :func:`encode_gaussians`, :func:`decode_gaussians`,
:func:`section_lengths`, :func:`morton_sort`.
"""

from .sections import (ATTRIBUTES, MAX_FEATURES, MAX_GAUSSIANS, compress, decode_gaussians, decompress,
                       encode_gaussians, morton_sort, section_lengths)
from .settings import CodecSettings

__all__ = ["CodecSettings", "encode_gaussians", "decode_gaussians", "section_lengths", "morton_sort",
           "compress", "decompress", "ATTRIBUTES", "MAX_GAUSSIANS", "MAX_FEATURES"]
