"""Codec quality knobs (:class:`CodecSettings`), stored in every bundle header."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .morton import MAX_BITS

SCALAR_MODES = ("linear", "codebook")


@dataclass
class CodecSettings:
    """How each attribute is quantised. Defaults were chosen by measurement (benchmarks/bench_sizes.py).

    position_bits      bits per axis of the positions, relative to the scene bounds (8..21)
    rotation_bits      bits per stored smallest-three component (4..16)
    scale_bits/mode    log-scales: ``codebook`` (one 1-D k-means table of 2**bits entries shared by
                       the three axes) or ``linear`` (per-axis min/max)
    opacity_bits/mode  opacity, quantised as alpha = sigmoid(logit) in [0, 1]
    color_bits/mode    DC colour (SH band 0), like the scales
    sh_codebook_size   entries of the SH-rest vector-quantisation codebook (capped by N); 0 = auto:
                       one per 8 Gaussians, 256..4096 (sections.sh_codebook_entries)
    sh_codebook_bits   bits per codebook value (linear per dimension)
    sh_iters           k-means iterations for the SH codebook
    feature_bits       bits per extra feature channel (linear per channel)
    zstd_level         Zstandard level for every section (1..22)
    seed               seed of the k-means sampling/initialisation (results are deterministic)
    """

    position_bits: int = 16
    rotation_bits: int = 7
    scale_bits: int = 8
    scale_mode: str = "linear"
    opacity_bits: int = 6
    opacity_mode: str = "linear"
    color_bits: int = 6
    color_mode: str = "codebook"
    sh_codebook_size: int = 0
    sh_codebook_bits: int = 8
    sh_iters: int = 8
    feature_bits: int = 8
    zstd_level: int = 19
    seed: int = 0

    def validate(self) -> "CodecSettings":
        """Raise ValueError for an out-of-range knob; return self."""
        def rng(name, lo, hi):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"codec setting {name}={v!r} must be an integer in {lo}..{hi}")

        rng("position_bits", 8, MAX_BITS)
        rng("rotation_bits", 4, 16)
        for a in ("scale", "opacity", "color"):
            rng(f"{a}_bits", 2, 16)
            if getattr(self, f"{a}_mode") not in SCALAR_MODES:
                raise ValueError(f"codec setting {a}_mode must be one of {SCALAR_MODES}")
        rng("sh_codebook_size", 0, 1 << 24)
        rng("sh_codebook_bits", 4, 16)
        rng("sh_iters", 0, 100)
        rng("feature_bits", 2, 16)
        rng("zstd_level", 1, 22)
        rng("seed", 0, 2**32 - 1)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> "CodecSettings":
        """Settings from a header dict; unknown keys or bad values raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError("codec settings must be an object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown codec settings {sorted(unknown)}")
        return cls(**d).validate()
