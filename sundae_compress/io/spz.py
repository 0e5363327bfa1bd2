"""Niantic ``.spz``: gzip of a 16-byte header and packed attribute arrays (written from the spec).

Layout (versions 2 and 3, every value little-endian, the whole stream gzip-compressed)::

    header   uint32 magic 0x5053474e ("NGSP"), uint32 version, uint32 count,
             uint8 sh_degree, uint8 fractional_bits, uint8 flags, uint8 reserved
    then, for all Gaussians in turn, each array whole:
    positions  3 x 24-bit signed fixed point, ``fractional_bits`` after the point
    alphas     uint8 sigmoid(opacity) * 255
    colors     3 x uint8 DC * (0.15 * 255) + 127.5
    scales     3 x uint8 (log scale + 10) * 16
    rotations  v3: uint32, the index of the largest |component| of the (x, y, z, w) unit quaternion
               in the top 2 bits, then the other three in order as sign bit + 9-bit magnitude / √½;
               v2: 3 x uint8 (x, y, z) * 127.5 + 127.5 with w >= 0
    sh         (degree+1)² - 1 coefficients x 3 channels (colour fastest), uint8 x * 128 + 128,
               rounded to buckets of 8 (degree 1) or 16 (degrees 2-3) as the reference packer does

The spec stores RUB axes (right, up, back) while 3DGS PLY files are RDF (right, down, forward):
writing flips y and z of positions, the quaternion's y and z, and the SH coefficients that are odd
in y·z; reading flips them back, so ``read_spz(write_spz(gs))`` is ``gs`` up to quantisation.
:func:`read_spz` also reads version 4 (a plain 32-byte header, a table of contents and one zstd
stream per attribute), which newer tools write.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import SundaeError
from ..gaussians import SH_COEFFS, GaussianSet, normalize_quats
from .atomic import write_bytes_atomic

MAGIC = 0x5053474E
HEADER = struct.Struct("<IIIBBBB")
HEADER_V4 = struct.Struct("<IIIBBBBI12x")
COLOR_SCALE = 0.15
WRITE_VERSIONS = (2, 3)
READ_VERSIONS = (2, 3, 4)
#: SH quantisation buckets of the reference packer: 5 bits for degree 1, 4 bits above.
SH1_BITS, SH_REST_BITS = 5, 4
_SQRT1_2 = np.float64(np.sqrt(0.5))

# Sign of each SH basis function (3DGS order, after DC) under (x, y, z) -> (x, -y, -z).
_SH_FLIP = np.array([-1, -1, 1,  # degree 1: y, z, x
                     -1, 1, 1, -1, 1,  # degree 2: xy, yz, 3z²-1, xz, x²-y²
                     -1, 1, -1, -1, 1, -1, 1], np.float32)  # degree 3


def _flip_axes(gs: GaussianSet) -> GaussianSet:
    """RDF <-> RUB (its own inverse): negate y and z of positions, quaternion and SH."""
    means = gs.means * np.array([1, -1, -1], np.float32)
    quats = gs.quats * np.array([1, 1, -1, -1], np.float32)
    sh = gs.sh.copy()
    k = sh.shape[1]
    sh[:, 1:] *= _SH_FLIP[: k - 1, None]
    return gs.replace(means=means, quats=quats, sh=sh)


#: Default fractional bits of positions (the reference packer uses 12). Measured with our renderer,
#: full scenes vs the source: donut (extent ~0.2) 12 bits 47.9 dB / 663 KB, 16 bits 57.4 dB / 758 KB,
#: 24 bits 58.4 dB / 849 KB; guitar 12 bits 64.9 dB / 1.40 MB, 16 bits 69.5 dB / 1.53 MB.
FRACTIONAL_BITS = 16


def _fractional_bits(means: np.ndarray) -> int:
    """The most fractional bits that still fit every coordinate in 24 signed bits."""
    m = float(np.abs(means).max()) if len(means) else 0.0
    if not np.isfinite(m):
        raise SundaeError("cannot write .spz: positions hold NaN/Inf")
    if m == 0.0:
        return 16
    fb = int(np.floor(np.log2((2 ** 23 - 1) / m)))
    if fb < 0:
        raise SundaeError(f"cannot write .spz: coordinate {m:.3g} is beyond the 24-bit fixed-point range")
    return min(fb, 24)


def _u8(x) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _quantise_sh(x: np.ndarray, bits: int) -> np.ndarray:
    q = np.round(x.astype(np.float64) * 128.0) + 128.0
    bucket = 1 << (8 - bits)
    q = np.floor((q + bucket // 2) / bucket) * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def _pack_rotations_v3(q_xyzw: np.ndarray) -> np.ndarray:
    n = len(q_xyzw)
    a = np.abs(q_xyzw)
    largest = np.argmax(a, axis=1)
    neg = q_xyzw[np.arange(n), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        negbit = ((q_xyzw[:, i] < 0) ^ neg).astype(np.uint32)
        mag = np.minimum(np.floor(511.0 * a[:, i] / _SQRT1_2 + 0.5), 511).astype(np.uint32)
        comp = np.where(keep, (comp << np.uint32(10)) | (negbit << np.uint32(9)) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(n, 4)


def _unpack_rotations_v3(b: np.ndarray) -> np.ndarray:
    comp = b.reshape(-1, 4).copy().view("<u4")[:, 0].astype(np.uint32)
    n = len(comp)
    largest = (comp >> np.uint32(30)).astype(np.int64)
    q = np.zeros((n, 4), np.float64)
    for i in (3, 2, 1, 0):
        keep = largest != i
        mag = (comp & np.uint32(511)).astype(np.float64)
        negbit = (comp >> np.uint32(9)) & np.uint32(1)
        v = _SQRT1_2 * mag / 511.0
        v = np.where(negbit == 1, -v, v)
        q[:, i] = np.where(keep, v, 0.0)
        comp = np.where(keep, comp >> np.uint32(10), comp)
    q[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - (q * q).sum(1)))
    return q


def encode_spz(gs: GaussianSet, *, version: int = 3, fractional_bits: Optional[int] = None) -> bytes:
    """The bytes of a ``.spz`` file (gzip included) holding ``gs``. ``fractional_bits`` of the
    24-bit positions: default :data:`FRACTIONAL_BITS`, fewer when the scene's largest coordinate
    would not fit."""
    if version not in WRITE_VERSIONS:
        raise SundaeError(f"cannot write .spz version {version}; versions {WRITE_VERSIONS} are supported")
    n = len(gs)
    if n == 0:
        raise SundaeError("cannot write .spz: the scene has no Gaussians")
    g = _flip_axes(gs)
    fb = min(FRACTIONAL_BITS if fractional_bits is None else int(fractional_bits), _fractional_bits(g.means))
    fixed = np.clip(np.round(g.means.astype(np.float64) * (1 << fb)), -(2 ** 23), 2 ** 23 - 1).astype("<i4")
    positions = fixed.view(np.uint8).reshape(n, 3, 4)[:, :, :3]
    alphas = _u8(1.0 / (1.0 + np.exp(-g.opacities.astype(np.float64))) * 255.0)
    colors = _u8(g.sh[:, 0].astype(np.float64) * (COLOR_SCALE * 255.0) + 127.5)
    scales = _u8((g.scales.astype(np.float64) + 10.0) * 16.0)
    q = normalize_quats(g.quats).astype(np.float64)
    q_xyzw = q[:, [1, 2, 3, 0]]
    if version >= 3:
        rotations = _pack_rotations_v3(q_xyzw)
    else:
        q_xyzw = np.where(q_xyzw[:, 3:] < 0, -q_xyzw, q_xyzw)
        rotations = _u8(q_xyzw[:, :3] * 127.5 + 127.5)
    k = g.sh.shape[1]
    rest = g.sh[:, 1:]  # (n, k-1, 3): coefficient outer, channel inner, as the spec orders them
    sh = np.empty((n, k - 1, 3), np.uint8)
    if k > 1:
        sh[:, :3] = _quantise_sh(rest[:, :3], SH1_BITS)
        sh[:, 3:] = _quantise_sh(rest[:, 3:], SH_REST_BITS)
    header = HEADER.pack(MAGIC, version, n, g.sh_degree, fb, 0, 0)
    raw = b"".join([header, positions.tobytes(), alphas.tobytes(), colors.tobytes(), scales.tobytes(),
                    rotations.tobytes(), sh.tobytes()])
    return gzip.compress(raw, compresslevel=9, mtime=0)


def write_spz(gs: GaussianSet, path, *, version: int = 3) -> int:
    """Write ``gs`` as a ``.spz`` file atomically; returns the bytes written."""
    data = encode_spz(gs, version=version)
    write_bytes_atomic(path, data)
    return len(data)


# -- reading -------------------------------------------------------------------------------------

def _gunzip(path, data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise SundaeError(f"{path}: corrupt .spz (gzip: {e})") from None


def _v4_streams(path, data: bytes, expected: list) -> list:
    """The six zstd attribute streams of a version-4 file, checked against ``expected`` sizes."""
    import zstandard

    nstreams, toc = HEADER_V4.unpack_from(data)[6:8]
    if nstreams == len(expected) - 1 and expected[-1] == 0:  # SH degree 0: no SH stream
        expected = expected[:-1]
    if nstreams != len(expected) or toc < HEADER_V4.size or toc + 16 * nstreams > len(data):
        raise SundaeError(f"{path}: corrupt .spz version 4 (table of contents)")
    sizes = np.frombuffer(data, "<u8", 2 * nstreams, toc).reshape(nstreams, 2)
    off = toc + 16 * nstreams
    out = []
    dctx = zstandard.ZstdDecompressor()
    for (comp, raw), want in zip(sizes.tolist(), expected):
        if raw != want or off + comp > len(data):
            raise SundaeError(f"{path}: .spz truncated or corrupt (stream sizes do not match the count)")
        try:
            out.append(dctx.decompress(data[off: off + comp], max_output_size=max(raw, 1)))
        except zstandard.ZstdError as e:
            raise SundaeError(f"{path}: corrupt .spz (zstd: {e})") from None
        if len(out[-1]) != raw:
            raise SundaeError(f"{path}: corrupt .spz (stream length)")
        off += comp
    return out + [b""] * (6 - len(out))


def read_spz(path) -> GaussianSet:
    """Read a ``.spz`` file (versions 2, 3 and 4) into a :class:`GaussianSet` (RDF axes, like a PLY)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SundaeError(f"{path}: no such file") from None
    except OSError as e:
        raise SundaeError(f"{path}: cannot read: {e.strerror or e}") from None
    size = len(data)
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(path, data)
        if len(data) < HEADER.size:
            raise SundaeError(f"{path}: .spz truncated (no header)")
        magic, version, n, degree, fb, flags, _ = HEADER.unpack_from(data)
        streams = None
    elif data[:4] == b"NGSP" and len(data) >= HEADER_V4.size:
        magic, version, n, degree, fb, flags, _, _ = HEADER_V4.unpack_from(data)
        streams = True
    else:
        raise SundaeError(f"{path}: not a .spz file (neither gzip nor NGSP data)")
    if magic != MAGIC:
        raise SundaeError(f"{path}: not a .spz file (bad magic)")
    if version not in READ_VERSIONS or (streams is None) != (version < 4):
        raise SundaeError(f"{path}: .spz version {version} is not supported (2, 3 and 4 are)")
    if degree > 3:
        raise SundaeError(f"{path}: .spz SH degree {degree} is not supported (0-3 are)")
    if n == 0:
        raise SundaeError(f"{path}: .spz holds no Gaussians")
    if fb > 31:
        raise SundaeError(f"{path}: corrupt .spz ({fb} fractional bits)")
    k = SH_COEFFS[degree]
    rot_bytes = 4 if version >= 3 else 3
    widths = [9, 1, 3, 3, rot_bytes, 3 * (k - 1)]
    if streams:
        parts = _v4_streams(path, data, [w * n for w in widths])
    else:
        need = HEADER.size + n * sum(widths)
        if len(data) < need:
            raise SundaeError(f"{path}: .spz truncated: {n} Gaussians need {need} bytes, "
                              f"{len(data)} decompressed")
        parts, off = [], HEADER.size
        for w in widths:
            parts.append(data[off: off + w * n])
            off += w * n
    pos = np.frombuffer(parts[0], np.uint8).reshape(n, 3, 3)
    fixed = np.zeros((n, 3, 4), np.uint8)
    fixed[:, :, :3] = pos
    fixed[:, :, 3] = np.where(pos[:, :, 2] & 0x80, 0xFF, 0)
    means = fixed.view("<i4")[:, :, 0].astype(np.float64) / float(1 << fb)
    a = np.frombuffer(parts[1], np.uint8).astype(np.float64) / 255.0
    a = np.clip(a, 1e-4, 1 - 1e-4)
    opacities = np.log(a / (1.0 - a))
    colors = np.frombuffer(parts[2], np.uint8).reshape(n, 3).astype(np.float64)
    dc = (colors / 255.0 - 0.5) / COLOR_SCALE
    scales = np.frombuffer(parts[3], np.uint8).reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    rb = np.frombuffer(parts[4], np.uint8).reshape(n, rot_bytes)
    if version >= 3:
        q_xyzw = _unpack_rotations_v3(rb)
    else:
        xyz = rb.astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz * xyz).sum(1)))
        q_xyzw = np.concatenate([xyz, w[:, None]], 1)
    quats = normalize_quats(q_xyzw[:, [3, 0, 1, 2]].astype(np.float32))
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0] = dc
    if k > 1:
        sh[:, 1:] = (np.frombuffer(parts[5], np.uint8).reshape(n, k - 1, 3).astype(np.float32) - 128.0) / 128.0
    gs = GaussianSet(means=means, quats=quats, scales=scales, opacities=opacities, sh=sh,
                     meta={"source": str(path), "source_bytes": size, "format": f"spz v{version}",
                           "source_count": n, "fractional_bits": fb})
    return _flip_axes(gs)
