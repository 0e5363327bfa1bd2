"""Codec quality knobs (:class:`CodecSettings`), stored in every bundle header."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .morton import MAX_BITS

SCALAR_MODES = ("linear", "codebook")
#: DC colour modes: the scalar modes, or ``step`` (v4 default): a uniform step ``color_step`` in the
#: orthonormal colour basis (:data:`sundae_compress.codec.sections.COLOR_BASIS`).
COLOR_MODES = SCALAR_MODES + ("step",)
#: ``scalar``: each SH-rest coefficient rounded to a multiple of its band's step (v2 default; no
#: k-means, so encoding is fast); ``vq``: one k-means codebook over whole SH-rest vectors (v1).
SH_MODES = ("scalar", "vq")


@dataclass
class CodecSettings:
    """How each attribute is quantised. The defaults are the ``medium`` quality preset
    (:data:`QUALITY_PRESETS`, measured in benchmarks/results/rate_distortion.md).

    position_bits      bits per axis of the positions, relative to the scene bounds (8..21)
    rotation_bits      bits per stored smallest-three component (4..16)
    scale_bits/mode    log-scales: ``codebook`` (one 1-D k-means table of 2**bits entries shared by
                       the three axes) or ``linear`` (per-axis min/max)
    opacity_bits/mode  opacity, quantised as alpha = sigmoid(logit) in [0, 1]
    color_bits/mode    DC colour (SH band 0): ``linear`` / ``codebook`` like the scales (color_bits), or
                       ``step`` (v4): uniform steps of ``color_step`` in the orthonormal colour basis
    color_step         step mode: quantisation step of the DC coefficients (same units as the SH steps)
    sh_mode            ``scalar`` (per-band uniform steps, v2) or ``vq`` (k-means codebook, v1)
    sh_step1..3        scalar mode: quantisation step of the SH coefficients of band 1, 2, 3 (v4: in
                       the orthonormal colour basis, v2: per RGB channel)
    sh_codebook_size   entries of the SH-rest vector-quantisation codebook (capped by N); 0 = auto:
                       one per 8 Gaussians, 256..4096 (sections.sh_codebook_entries)
    sh_codebook_bits   bits per codebook value (linear per dimension)
    sh_iters           k-means iterations for the SH codebook
    feature_bits       bits per extra feature channel (linear per channel)
    zstd_level         Zstandard level for every section (1..22)
    seed               seed of the k-means sampling/initialisation (results are deterministic)
    """

    position_bits: int = 14
    rotation_bits: int = 7
    scale_bits: int = 6
    scale_mode: str = "linear"
    opacity_bits: int = 6
    opacity_mode: str = "linear"
    color_bits: int = 6
    color_mode: str = "step"
    color_step: float = 0.07
    sh_mode: str = "scalar"
    sh_step1: float = 0.07
    sh_step2: float = 0.07
    sh_step3: float = 0.07
    sh_codebook_size: int = 0
    sh_codebook_bits: int = 8
    sh_iters: int = 8
    feature_bits: int = 8
    zstd_level: int = 16
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
            modes = COLOR_MODES if a == "color" else SCALAR_MODES
            if getattr(self, f"{a}_mode") not in modes:
                raise ValueError(f"codec setting {a}_mode must be one of {modes}")
        if self.sh_mode not in SH_MODES:
            raise ValueError(f"codec setting sh_mode must be one of {SH_MODES}")
        for name in ("sh_step1", "sh_step2", "sh_step3", "color_step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1e-4 <= v <= 4.0:
                raise ValueError(f"codec setting {name}={v!r} must be a number in 0.0001..4")
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


#: Named points on the rate–distortion curve (``--quality``), from the largest/best to the smallest.
#: Measured on the shared scenes in benchmarks/results/rate_distortion.md. The colour steps (v4) replace
#: the 7/6/6/5-bit colour codebooks of v2. The squared error of the coefficients overstates the gain:
#: whole guitar, 6-bit codebook 9.2e-4 vs step 0.1 8.1e-4, yet step 0.1 renders 0.5 dB worse (novel views)
#: and step 0.07 renders like the codebook (-0.1 dB mean, same worst view) at 2.6 % fewer bytes; on
#: playbot (SH2) the codebook is far worse (3.4e-3), so step 0.07 is both smaller and better there.
QUALITY_PRESETS = {
    "max": dict(position_bits=16, rotation_bits=8, scale_bits=8, opacity_bits=7, color_step=0.04,
                sh_step1=0.03, sh_step2=0.03, sh_step3=0.03),
    "high": dict(position_bits=15, rotation_bits=7, scale_bits=7, opacity_bits=6, color_step=0.055,
                 sh_step1=0.05, sh_step2=0.05, sh_step3=0.05),
    "medium": dict(position_bits=14, rotation_bits=7, scale_bits=6, opacity_bits=6, color_step=0.07,
                   sh_step1=0.07, sh_step2=0.07, sh_step3=0.07),
    "low": dict(position_bits=13, rotation_bits=5, scale_bits=5, opacity_bits=5, color_step=0.11,
                sh_step1=0.12, sh_step2=0.15, sh_step3=0.15),
}
#: The preset used when neither ``quality`` nor explicit settings are given.
DEFAULT_QUALITY = "medium"


def quality_settings(quality=None, **overrides) -> CodecSettings:
    """:class:`CodecSettings` of a named preset (None = :data:`DEFAULT_QUALITY`) plus ``overrides``.

    Raises ValueError for an unknown name (the message lists the presets)."""
    name = DEFAULT_QUALITY if quality is None else str(quality).strip().lower()
    if name not in QUALITY_PRESETS:
        raise ValueError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITY_PRESETS)}")
    return CodecSettings(**{**QUALITY_PRESETS[name], **overrides}).validate()
