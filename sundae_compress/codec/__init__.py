"""Quantisation codec: Morton order, scalar quantisers, smallest-three rotations, k-means VQ.

Public API: :class:`CodecSettings`, :func:`encode_gaussians`, :func:`decode_gaussians`,
:func:`section_lengths`, :func:`morton_sort`.
"""

from .sections import (ATTRIBUTES, CODEC_VERSION, CODEC_VERSIONS, codec_version, roundtrip, MAX_FEATURES, MAX_GAUSSIANS, compress, decode_gaussians, decompress,
                       encode_gaussians, morton_sort, section_lengths)
from .settings import DEFAULT_QUALITY, QUALITY_PRESETS, CodecSettings, quality_settings

__all__ = ["CodecSettings", "quality_settings", "QUALITY_PRESETS", "DEFAULT_QUALITY", "CODEC_VERSION",
           "CODEC_VERSIONS", "codec_version", "roundtrip", "encode_gaussians", "decode_gaussians", "section_lengths", "morton_sort",
           "compress", "decompress", "ATTRIBUTES", "MAX_GAUSSIANS", "MAX_FEATURES"]
