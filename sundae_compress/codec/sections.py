"""The attribute table: each section name maps to an encode/decode pair and its raw length.

:func:`encode_gaussians` sorts the Gaussians along the Morton curve of their quantised positions
and encodes every attribute into one raw section (bytes) plus a small JSON-able ``meta`` dict;
:func:`decode_gaussians` is its inverse. :func:`section_lengths` gives the exact raw length of every
section from ``meta`` alone, so a reader can bound decompression before it starts.
:func:`compress` / :func:`decompress` wrap Zstandard with that bound.

Byte layouts are specified in ``formats/SUNDAE.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np
import zstandard

from ..gaussians import SH_COEFFS, GaussianSet, logit, sigmoid
from .morton import morton_decode, morton_encode, morton_order
from .quantise import (dequantise_codebook, dequantise_linear, fit_codebook, from_planes, from_rows, to_rows,
                       planes_length, quantise_codebook, quantise_linear, to_planes)
from .rotation import decode_smallest_three, encode_smallest_three
from .settings import CodecSettings
from .vq import kmeans

#: Largest Gaussian count a bundle may declare.
MAX_GAUSSIANS = 1 << 28
#: Largest extra-feature count.
MAX_FEATURES = 4096
_ALPHA_EPS = 1e-6
#: Layout version written by :func:`encode_gaussians` (stored as ``meta["version"]``; absent = 1).
CODEC_VERSION = 4
CODEC_VERSIONS = (1, 2, 4)  # no layout 3: format version 3 is the ladder, whose levels are layout 2
#: Settings keys that v1 bundles do not have.
V2_SETTINGS = frozenset({"sh_mode", "sh_step1", "sh_step2", "sh_step3"})
#: Settings keys that v1 and v2 bundles do not have.
V4_SETTINGS = frozenset({"color_step"})

#: v4: the orthonormal colour basis the DC (``color_mode="step"``) and scalar SH-rest coefficients are
#: quantised in: rows are (r+g+b)/sqrt(3), (r-b)/sqrt(2), (r-2g+b)/sqrt(6). Being orthonormal, a step
#: costs the same squared error as in RGB, but the three channels of a coefficient are strongly
#: correlated (playbot SH rest: r-g 0.88), so most of the energy lands in the first component and the
#: other two are mostly zero codes: 10 % playbot SH rest 85.2 -> 77.8 KB at 0.72x the squared error.
COLOR_BASIS = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]]) \
    / np.sqrt([3.0, 2.0, 6.0])[:, None]
#: A step-coded colour value is off by at most ``COLOR_BASIS_GAIN * step / 2`` per RGB channel (the
#: largest column sum of ``|COLOR_BASIS|``, 1.69) and by at most ``sqrt(3) * step / 2`` as an RGB vector.
COLOR_BASIS_GAIN = float(np.abs(COLOR_BASIS).sum(0).max())


# -- helpers shared by the scalar attributes ----------------------------------------------------

def _encode_scalar(x: np.ndarray, bits: int, mode: str, rows: bool = False) -> Tuple[bytes, dict]:
    """(N, C) floats -> codebook (float32 LE, codebook mode) + codes (byte planes, or row-major
    with ``rows``); linear meta lo/hi."""
    x = np.asarray(x, np.float32)
    x = x[:, None] if x.ndim == 1 else x
    lay = to_rows if rows else to_planes
    if mode == "codebook":
        cb = fit_codebook(x, bits)
        return cb.astype("<f4").tobytes() + lay(quantise_codebook(x, cb), bits), {}
    if len(x):
        lo, hi = x.min(0), x.max(0)
    else:
        lo = hi = np.zeros(x.shape[1], np.float32)
    q = quantise_linear(x, lo, hi, bits)
    return lay(q, bits), {"lo": lo.tolist(), "hi": hi.tolist()}


def _decode_scalar(buf: bytes, n: int, cols: int, bits: int, mode: str, meta: dict, rows: bool = False) -> np.ndarray:
    lay = from_rows if rows else from_planes
    if mode == "codebook":
        k = 1 << bits
        cb = np.frombuffer(buf[:4 * k], "<f4")
        if not np.isfinite(cb).all():
            raise ValueError("non-finite codebook value")
        return dequantise_codebook(lay(buf[4 * k:], n, cols, bits), cb)
    lo, hi = _bounds(meta, cols)
    return dequantise_linear(lay(buf, n, cols, bits), lo, hi, bits)


def _scalar_length(n: int, cols: int, bits: int, mode: str) -> int:
    return (4 << bits if mode == "codebook" else 0) + planes_length(n, cols, bits)


def _bounds(meta: dict, cols: int):
    try:
        lo = np.asarray(meta["lo"], np.float64)
        hi = np.asarray(meta["hi"], np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"missing or bad lo/hi ({e})") from None
    if lo.shape != (cols,) or hi.shape != (cols,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("bad lo/hi bounds")
    return lo.astype(np.float32), hi.astype(np.float32)


def quantise_positions(means: np.ndarray, lo, hi, bits: int) -> np.ndarray:
    """Positions -> (N, 3) integer grid coordinates over the box ``lo``..``hi``."""
    return quantise_linear(means, lo, hi, bits)


# -- the attribute encoders/decoders (each pair side by side) ------------------------------------
# enc(gs, s, version) -> (raw bytes, meta part);  dec(buf, meta, s) -> decoded arrays (dict);
# length(meta, s) -> raw bytes;  present(meta) -> whether the section exists.

def enc_means(gs: GaussianSet, s: CodecSettings, version=CODEC_VERSION):
    lo, hi = gs.bounds()
    codes = morton_encode(quantise_positions(gs.means, lo, hi, s.position_bits))
    if len(codes) > 1 and np.any(codes[1:] < codes[:-1]):
        raise ValueError("Gaussians must be in Morton order before encoding the means")
    deltas = np.diff(codes, prepend=np.uint64(0))
    return to_planes(deltas, 3 * s.position_bits), {"lo": lo.tolist(), "hi": hi.tolist()}


def dec_means(buf, meta, s):
    lo, hi = _bounds(meta["means"], 3)
    deltas = from_planes(buf, meta["n"], 1, 3 * s.position_bits)[:, 0]
    codes = np.cumsum(deltas, dtype=np.uint64)
    q = morton_decode(codes)
    if q.size and int(q.max()) >= 1 << s.position_bits:
        raise ValueError("position code out of range")
    return {"means": dequantise_linear(q, lo, hi, s.position_bits)}


def len_means(meta, s):
    return planes_length(meta["n"], 1, 3 * s.position_bits)


def enc_quats(gs, s, version=CODEC_VERSION):
    idx, codes = encode_smallest_three(gs.quats, s.rotation_bits)
    return to_planes(idx, 2) + to_planes(codes, s.rotation_bits), {}


def dec_quats(buf, meta, s):
    n = meta["n"]
    idx = from_planes(buf[:n], n, 1, 2)[:, 0]
    return {"quats": decode_smallest_three(idx, from_planes(buf[n:], n, 3, s.rotation_bits), s.rotation_bits)}


def len_quats(meta, s):
    return planes_length(meta["n"], 1, 2) + planes_length(meta["n"], 3, s.rotation_bits)


def enc_scales(gs, s, version=CODEC_VERSION):
    return _encode_scalar(gs.scales, s.scale_bits, s.scale_mode)


def dec_scales(buf, meta, s):
    return {"scales": _decode_scalar(buf, meta["n"], 3, s.scale_bits, s.scale_mode, meta.get("scales", {}))}


def len_scales(meta, s):
    return _scalar_length(meta["n"], 3, s.scale_bits, s.scale_mode)


def enc_opacities(gs, s, version=CODEC_VERSION):
    return _encode_scalar(sigmoid(gs.opacities).astype(np.float32)[:, None], s.opacity_bits, s.opacity_mode)


def dec_opacities(buf, meta, s):
    a = _decode_scalar(buf, meta["n"], 1, s.opacity_bits, s.opacity_mode, meta.get("opacities", {}))
    return {"opacities": logit(a[:, 0], _ALPHA_EPS, 1 - _ALPHA_EPS).astype(np.float32)}


def len_opacities(meta, s):
    return _scalar_length(meta["n"], 1, s.opacity_bits, s.opacity_mode)


def enc_sh_dc(gs, s, version=CODEC_VERSION):
    if s.color_mode == "step":  # v4
        return _encode_steps(gs.sh[:, :1, :], np.array([s.color_step]), planes=True)
    # v2: row-major (r, g, b per Gaussian; measured 0.4-1.9 bits/Gaussian smaller after zstd)
    return _encode_scalar(gs.sh[:, 0, :], s.color_bits, s.color_mode, rows=version >= 2)


def dec_sh_dc(buf, meta, s):
    if s.color_mode == "step":
        return {"sh_dc": _decode_steps(buf, meta, "sh_dc", 1, np.array([s.color_step]), True, planes=True)[:, 0, :]}
    return {"sh_dc": _decode_scalar(buf, meta["n"], 3, s.color_bits, s.color_mode, meta.get("sh_dc", {}),
                                    rows=codec_version(meta) >= 2)}


def len_sh_dc(meta, s):
    if s.color_mode == "step":
        return planes_length(meta["n"], 3, _code_bits(meta, "sh_dc"))
    return _scalar_length(meta["n"], 3, s.color_bits, s.color_mode)


def _label_bits(c: int) -> int:
    return max(1, math.ceil(math.log2(c))) if c > 1 else 1


#: ``sh_codebook_size=0`` (auto): one entry per this many Gaussians, between SH_CODEBOOK_MIN and
#: SH_CODEBOOK_MAX. Full scenes (>= 32k Gaussians) get 4096 entries; on a 10 % playbot (12,500) 4096 ->
#: 1562 entries cut the raw SH section from 123 KB to ~55 KB for ~0.05 dB (the codebook, not the
#: labels, dominates small scenes)
SH_GAUSSIANS_PER_ENTRY = 8
SH_CODEBOOK_MIN = 256
SH_CODEBOOK_MAX = 4096


def sh_codebook_entries(n: int, s) -> int:
    """Codebook entries used for ``n`` Gaussians: the configured size, or the auto rule; never > n."""
    want = s.sh_codebook_size or min(SH_CODEBOOK_MAX, max(SH_CODEBOOK_MIN, n // SH_GAUSSIANS_PER_ENTRY))
    return max(1, min(want, n))


def _enc_sh_vq(gs, s, version=CODEC_VERSION):
    n, k = gs.sh.shape[:2]
    x = gs.sh[:, 1:, :].reshape(n, (k - 1) * 3)
    centres, labels = kmeans(x, sh_codebook_entries(n, s), iters=s.sh_iters, seed=s.seed)
    lo, hi = (centres.min(0), centres.max(0)) if len(centres) else (np.zeros(x.shape[1]),) * 2
    cq = quantise_linear(centres, lo, hi, s.sh_codebook_bits)
    c = len(centres)
    return (to_planes(cq, s.sh_codebook_bits) + to_planes(labels, _label_bits(c)),
            {"codebook_size": c, "lo": np.asarray(lo, np.float32).tolist(), "hi": np.asarray(hi, np.float32).tolist()})


def _dec_sh_vq(buf, meta, s):
    n, d = meta["n"], (SH_COEFFS[meta["sh_degree"]] - 1) * 3
    m = meta["sh_rest"]
    c = m["codebook_size"]
    lo, hi = _bounds(m, d)
    cb_len = planes_length(c, d, s.sh_codebook_bits)
    centres = dequantise_linear(from_planes(buf[:cb_len], c, d, s.sh_codebook_bits), lo, hi, s.sh_codebook_bits)
    labels = from_planes(buf[cb_len:], n, 1, _label_bits(c))[:, 0]
    if n and int(labels.max()) >= c:
        raise ValueError("SH codebook label out of range")
    return {"sh_rest": centres[labels.astype(np.int64)].reshape(n, d // 3, 3)}


def _len_sh_vq(meta, s):
    c = meta["sh_rest"]["codebook_size"]
    d = (SH_COEFFS[meta["sh_degree"]] - 1) * 3
    return planes_length(c, d, s.sh_codebook_bits) + planes_length(meta["n"], 1, _label_bits(c))


#: Widest zigzag code of the scalar SH mode (coefficients beyond ±step·(2**15 - 1) are clipped).
SH_SCALAR_MAX_BITS = 16


def sh_band_steps(sh_degree: int, s) -> np.ndarray:
    """Step of every SH-rest coefficient ((K-1,) float64), band by band (band l has 2l+1 entries)."""
    steps = [s.sh_step1, s.sh_step2, s.sh_step3]
    return np.concatenate([np.full(2 * b + 1, float(steps[b - 1])) for b in range(1, sh_degree + 1)])


def _zigzag(q: np.ndarray) -> np.ndarray:
    return np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.int64)
    return np.where(z & 1, -(z >> 1) - 1, z >> 1)


def _encode_steps(x, steps, ortho: bool = True, planes: bool = False):
    """(N, C, 3) SH coefficients -> zigzag codes of ``round(y / steps[c])``, y = x in :data:`COLOR_BASIS`
    (``ortho``, v4) or x itself (v2); meta ``{"bits": B}``. Layout: row-major (v4: per Gaussian the y0 of
    every coefficient, then the y1s, then the y2s; v2: coefficient by coefficient, r g b), or byte
    planes with ``planes`` (v4 DC: 7-12 % smaller than rows on the shared scenes)."""
    n, c = x.shape[:2]
    y = x.astype(np.float64)
    if ortho:
        y = y @ COLOR_BASIS.T
    lim = (1 << (SH_SCALAR_MAX_BITS - 1)) - 1
    q = np.clip(np.rint(y / steps[None, :, None]), -lim, lim).astype(np.int64)
    if ortho:  # component-major (measured: playbot SH rest 747.7 -> 737.8 KB whole, 77.8 -> 76.1 KB at 10 %)
        q = q.transpose(0, 2, 1)
    z = _zigzag(q.reshape(n, c * 3))
    bits = max(1, int(z.max()).bit_length()) if z.size else 1
    return (to_planes if planes else to_rows)(z, bits), {"bits": bits}


def _decode_steps(buf, meta, name, c, steps, ortho, planes=False):
    """Inverse of :func:`_encode_steps`: (N, C, 3) float32."""
    n = meta["n"]
    z = (from_planes if planes else from_rows)(buf, n, 3 * c, _code_bits(meta, name))
    q = _unzigzag(z)
    q = q.reshape(n, 3, c).transpose(0, 2, 1) if ortho else q.reshape(n, c, 3)
    y = q * steps[None, :, None]
    return (y @ COLOR_BASIS if ortho else y).astype(np.float32)


def _code_bits(meta, name) -> int:
    """Code width ``meta[name]["bits"]`` of a step-coded section (ValueError unless 1..16)."""
    b = meta[name].get("bits") if isinstance(meta.get(name), dict) else None
    if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= SH_SCALAR_MAX_BITS:
        raise ValueError(f"{name} code width {b!r} is out of range 1..{SH_SCALAR_MAX_BITS}")
    return b


def _enc_sh_scalar(gs, s, version=CODEC_VERSION):
    return _encode_steps(gs.sh[:, 1:, :], sh_band_steps(gs.sh_degree, s), ortho=version >= 4)


def _dec_sh_scalar(buf, meta, s):
    k = SH_COEFFS[meta["sh_degree"]] - 1
    return {"sh_rest": _decode_steps(buf, meta, "sh_rest", k, sh_band_steps(meta["sh_degree"], s),
                                     codec_version(meta) >= 4)}


def _len_sh_scalar(meta, s):
    return planes_length(meta["n"], (SH_COEFFS[meta["sh_degree"]] - 1) * 3, _code_bits(meta, "sh_rest"))


def enc_sh_rest(gs, s, version=CODEC_VERSION):
    return (_enc_sh_scalar if s.sh_mode == "scalar" else _enc_sh_vq)(gs, s, version)


def dec_sh_rest(buf, meta, s):
    return (_dec_sh_scalar if s.sh_mode == "scalar" else _dec_sh_vq)(buf, meta, s)


def len_sh_rest(meta, s):
    return (_len_sh_scalar if s.sh_mode == "scalar" else _len_sh_vq)(meta, s)


def enc_features(gs, s, version=CODEC_VERSION):
    return _encode_scalar(gs.features, s.feature_bits, "linear")


def dec_features(buf, meta, s):
    return {"features": _decode_scalar(buf, meta["n"], meta["num_features"], s.feature_bits, "linear",
                                       meta.get("features", {}))}


def len_features(meta, s):
    return _scalar_length(meta["n"], meta["num_features"], s.feature_bits, "linear")


@dataclass(frozen=True)
class Codec:
    encode: Callable
    decode: Callable
    length: Callable
    present: Callable


#: section name -> its codec, in file order.
ATTRIBUTES: Dict[str, Codec] = {
    "means": Codec(enc_means, dec_means, len_means, lambda m: True),
    "quats": Codec(enc_quats, dec_quats, len_quats, lambda m: True),
    "scales": Codec(enc_scales, dec_scales, len_scales, lambda m: True),
    "opacities": Codec(enc_opacities, dec_opacities, len_opacities, lambda m: True),
    "sh_dc": Codec(enc_sh_dc, dec_sh_dc, len_sh_dc, lambda m: True),
    "sh_rest": Codec(enc_sh_rest, dec_sh_rest, len_sh_rest, lambda m: m["sh_degree"] > 0),
    "features": Codec(enc_features, dec_features, len_features, lambda m: m["num_features"] > 0),
}


# -- whole-set API -----------------------------------------------------------------------------

def morton_sort(gs: GaussianSet, settings: CodecSettings | None = None):
    """``(sorted_gs, order)``: the Gaussians in the order the codec stores them
    (``sorted_gs = gs.subset(order)``); decoding returns them in this order."""
    s = (settings or CodecSettings()).validate()
    lo, hi = gs.bounds()
    order = morton_order(quantise_positions(gs.means, lo, hi, s.position_bits))
    return gs.subset(order), order


def encode_gaussians(gs: GaussianSet, settings: CodecSettings | None = None, version: int = CODEC_VERSION):
    """Encode ``gs`` -> ``(sections: dict[name, raw bytes], meta: dict)`` (meta is JSON-able).

    The Gaussians are stored in Morton order (nothing about the input order is kept). Raises
    ValueError for non-finite values or counts beyond the format's limits. ``version=1`` writes the
    legacy v1 layout (SH by k-means only, no v2 settings keys); it exists so tests can make v1 bundles.
    """
    s = (settings or CodecSettings()).validate()
    if version not in CODEC_VERSIONS:
        raise ValueError(f"unknown codec version {version!r}")
    if version == 1 and s.sh_mode != "vq":
        s = dataclasses.replace(s, sh_mode="vq")
    if version < 4 and s.color_mode == "step":
        s = dataclasses.replace(s, color_mode="codebook")
    if len(gs) > MAX_GAUSSIANS or gs.num_features > MAX_FEATURES:
        raise ValueError(f"{len(gs)} Gaussians / {gs.num_features} features exceed the format limits")
    if not gs.finite_mask().all():
        raise ValueError("cannot encode non-finite Gaussian attributes (drop those rows first)")
    sgs, _ = morton_sort(gs, s)
    sd = s.to_dict()
    if version < 4:
        sd = {k: v for k, v in sd.items() if k not in V4_SETTINGS | (V2_SETTINGS if version == 1 else set())}
    meta = {"n": len(gs), "sh_degree": gs.sh_degree, "num_features": gs.num_features, "settings": sd}
    if version >= 2:
        meta = {"version": version, **meta}
    sections = {}
    for name, codec in ATTRIBUTES.items():
        if not codec.present(meta):
            continue
        raw, part = codec.encode(sgs, s, version)
        sections[name] = raw
        if part:
            meta[name] = part
    return sections, meta


def codec_version(meta) -> int:
    """Layout version of a codec ``meta`` dict: its ``version`` key (v2+), or 1 when absent."""
    v = meta.get("version", 1) if isinstance(meta, dict) else None
    if isinstance(v, bool) or v not in CODEC_VERSIONS or ("version" in meta and v == 1):
        raise ValueError(f"unknown codec version {v!r}")
    return v


def check_meta(meta) -> CodecSettings:
    """Validate the counts of a codec ``meta`` dict (ValueError if absurd); return its settings."""
    if not isinstance(meta, dict):
        raise ValueError("codec meta must be an object")
    version = codec_version(meta)
    for key, hi in (("n", MAX_GAUSSIANS), ("sh_degree", 3), ("num_features", MAX_FEATURES)):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise ValueError(f"{key}={v!r} is out of range 0..{hi}")
    d = meta.get("settings")
    if version < 4:
        newer = (V4_SETTINGS | (V2_SETTINGS if version == 1 else set())) & set(d if isinstance(d, dict) else ())
        if newer:
            raise ValueError(f"v{version} codec settings hold later keys {sorted(newer)}")
        if version == 1 and isinstance(d, dict):
            d = dict(d, sh_mode="vq")
    s = CodecSettings.from_dict(d)
    if version < 4 and s.color_mode == "step":
        raise ValueError(f"color_mode 'step' needs codec version 4, not {version}")
    if s.color_mode == "step":
        _code_bits(meta, "sh_dc")
    if meta["sh_degree"] > 0:
        m = meta.get("sh_rest")
        if s.sh_mode == "vq":
            c = m.get("codebook_size") if isinstance(m, dict) else None
            if isinstance(c, bool) or not isinstance(c, int) or not (min(1, meta["n"]) <= c <= max(1, meta["n"])) or c > 1 << 24:
                raise ValueError(f"SH codebook size {c!r} is out of range")
        else:
            _code_bits(meta, "sh_rest")
    return s


def section_lengths(meta) -> Dict[str, int]:
    """Exact raw byte length of each section present, from ``meta`` alone (validated first)."""
    s = check_meta(meta)
    return {name: c.length(meta, s) for name, c in ATTRIBUTES.items() if c.present(meta)}


def decode_gaussians(sections: Dict[str, bytes], meta: dict) -> GaussianSet:
    """Inverse of :func:`encode_gaussians` (rows in Morton order). ValueError if inconsistent."""
    s = check_meta(meta)
    want = section_lengths(meta)
    out = {}
    for name, length in want.items():
        buf = sections.get(name)
        if buf is None:
            raise ValueError(f"section {name!r} is missing")
        if len(buf) != length:
            raise ValueError(f"section {name!r} holds {len(buf)} bytes, expected {length}")
        out.update(ATTRIBUTES[name].decode(bytes(buf), meta, s))
    n = meta["n"]
    sh = out["sh_dc"][:, None, :]
    if "sh_rest" in out:
        sh = np.concatenate([sh, out["sh_rest"]], 1)
    return GaussianSet(means=out["means"], quats=out["quats"], scales=out["scales"],
                       opacities=out["opacities"], sh=sh.reshape(n, SH_COEFFS[meta["sh_degree"]], 3), features=out.get("features"))


# -- zstd --------------------------------------------------------------------------------------

def compress(raw: bytes, level: int) -> bytes:
    """Zstandard frame of ``raw`` (content size recorded in the frame)."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)


def decompress(blob: bytes, raw_length: int) -> bytes:
    """Decompress one zstd frame that must hold exactly ``raw_length`` bytes; ValueError otherwise.

    Nothing larger than ``raw_length`` is ever allocated."""
    try:
        size = zstandard.frame_content_size(blob)
    except zstandard.ZstdError as e:
        raise ValueError(f"not a zstd frame ({e})") from None
    if size != raw_length:
        raise ValueError(f"zstd frame declares {size} bytes, expected {raw_length}")
    try:
        out = zstandard.ZstdDecompressor().decompress(blob, max_output_size=raw_length)
    except zstandard.ZstdError as e:
        raise ValueError(f"zstd data is corrupt ({e})") from None
    if len(out) != raw_length:
        raise ValueError(f"zstd frame gave {len(out)} bytes, expected {raw_length}")
    return out


def roundtrip(gs: GaussianSet, settings: CodecSettings | None = None, keep_order: bool = False) -> GaussianSet:
    """``decode(encode(gs))``: what a bundle will hold. Rows come back in Morton order, or in the
    order of ``gs`` with ``keep_order`` (for losses against the unquantised Gaussians)."""
    sections, meta = encode_gaussians(gs, settings)
    dec = decode_gaussians(sections, meta)
    if keep_order:
        _, order = morton_sort(gs, settings)
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        dec = dec.subset(inv)
    return dec
