"""PlayCanvas ``.compressed.ply`` (written from the public format description).

A binary little-endian PLY with up to three elements:

* ``chunk`` (one per 256 Gaussians, float32): ``min_x min_y min_z max_x max_y max_z``,
  ``min_scale_x.. max_scale_z`` (log-scales, clamped to ±20) and ``min_r.. max_b`` (DC colour as
  ``f_dc * C0 + 0.5``): each chunk's bounds for the values packed below.
* ``vertex`` (uint32 ``packed_position packed_rotation packed_scale packed_color``): position and
  scale as 11/10/11-bit fractions of the chunk's range (x in the top bits); rotation as 2 bits for
  the index of the largest |component| of (rot_0..rot_3) = (w, x, y, z) and three 10-bit values
  ``v / √2 + 0.5``; colour as 8-bit r, g, b fractions of the chunk range and 8-bit sigmoid(opacity).
* ``sh`` (optional, uchar ``f_rest_0..``): ``trunc((v / 8 + 0.5) * 256)``, clamped to 0..255;
  decoded as ``(b + 0.5) / 256`` with 0 and 255 mapping to the ends of ±4.

Gaussians are written in Morton order of their positions so that chunks are compact in space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codec.morton import morton_order
from ..errors import SundaeError
from ..gaussians import SH_C0, GaussianSet, normalize_quats
from .atomic import atomic_write

CHUNK = 256
CHUNK_PROPS = ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
               "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
               "min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]
VERTEX_PROPS = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
SUFFIX = ".compressed.ply"


def spatial_order(means: np.ndarray, bits: int = 10) -> np.ndarray:
    """Morton order of positions quantised to ``bits`` per axis over their bounding box."""
    lo, hi = means.min(0), means.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.clip((means - lo) / span * ((1 << bits) - 1), 0, (1 << bits) - 1).astype(np.uint32)
    return morton_order(q)


def _unorm(t: np.ndarray, bits: int) -> np.ndarray:
    m = (1 << bits) - 1
    return np.clip(np.floor(t * m + 0.5), 0, m).astype(np.uint32)


def _chunk_fraction(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(v - lo) / (hi - lo) per Gaussian, with lo/hi broadcast from its chunk; 0 for a flat range."""
    span = hi - lo
    return np.clip(np.where(span > 1e-5, (v - lo) / np.where(span > 1e-5, span, 1.0), 0.0), 0.0, 1.0)


def _chunk_min_max(v: np.ndarray, n_chunks: int):
    """Per-chunk min and max of (N, C) values (the last chunk may be short)."""
    n = len(v)
    pad = n_chunks * CHUNK - n
    full = np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v
    full = full.reshape(n_chunks, CHUNK, -1)
    return full.min(1), full.max(1)


def encode_compressed_ply(gs: GaussianSet) -> list:
    """The parts (header + bodies) of a ``.compressed.ply`` file holding ``gs``."""
    n = len(gs)
    if n == 0:
        raise SundaeError("cannot write .compressed.ply: the scene has no Gaussians")
    g = gs.subset(spatial_order(gs.means.astype(np.float64)))
    nc = (n + CHUNK - 1) // CHUNK
    ci = np.arange(n) // CHUNK

    pos = g.means.astype(np.float64)
    scl = g.scales.astype(np.float64)
    col = g.sh[:, 0].astype(np.float64) * SH_C0 + 0.5
    pmin, pmax = _chunk_min_max(pos, nc)
    smin, smax = (np.clip(a, -20, 20) for a in _chunk_min_max(scl, nc))
    cmin, cmax = _chunk_min_max(col, nc)
    chunks = np.concatenate([pmin, pmax, smin, smax, cmin, cmax], 1).astype("<f4")
    # fractions use the float32 bounds a reader sees
    pmin, pmax, smin, smax, cmin, cmax = (chunks[:, 3 * i: 3 * i + 3].astype(np.float64) for i in range(6))

    def pack111011(v, lo, hi):
        t = _chunk_fraction(v, lo[ci], hi[ci])
        return (_unorm(t[:, 0], 11) << np.uint32(21)) | (_unorm(t[:, 1], 10) << np.uint32(11)) | _unorm(t[:, 2], 11)

    packed_position = pack111011(pos, pmin, pmax)
    packed_scale = pack111011(scl, smin, smax)
    tc = _chunk_fraction(col, cmin[ci], cmax[ci])
    alpha = 1.0 / (1.0 + np.exp(-g.opacities.astype(np.float64)))
    packed_color = ((_unorm(tc[:, 0], 8) << np.uint32(24)) | (_unorm(tc[:, 1], 8) << np.uint32(16))
                    | (_unorm(tc[:, 2], 8) << np.uint32(8)) | _unorm(alpha, 8))
    q = normalize_quats(g.quats).astype(np.float64)
    largest = np.argmax(np.abs(q), 1)
    q = np.where(q[np.arange(n), largest][:, None] < 0, -q, q)
    packed_rotation = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        packed_rotation = np.where(keep, (packed_rotation << np.uint32(10)) | _unorm(q[:, i] * np.sqrt(0.5) + 0.5, 10),
                                   packed_rotation)
    vertex = np.stack([packed_position, packed_rotation, packed_scale, packed_color], 1).astype("<u4")

    k = g.sh.shape[1]
    n_rest = 3 * (k - 1)
    lines = ["ply", "format binary_little_endian 1.0", "comment written by sundae-compress",
             f"element chunk {nc}"] + [f"property float {p}" for p in CHUNK_PROPS]
    lines += [f"element vertex {n}"] + [f"property uint {p}" for p in VERTEX_PROPS]
    parts = [chunks.tobytes(), vertex.tobytes()]
    if n_rest:
        rest = g.sh[:, 1:].transpose(0, 2, 1).reshape(n, n_rest).astype(np.float64)  # channel-major
        parts.append(np.clip(np.trunc((rest / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8).tobytes())
        lines += [f"element sh {n}"] + [f"property uchar f_rest_{i}" for i in range(n_rest)]
    header = ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")
    return [header] + parts


def write_compressed_ply(gs: GaussianSet, path) -> int:
    """Write ``gs`` as a PlayCanvas ``.compressed.ply`` atomically; returns the bytes written."""
    parts = encode_compressed_ply(gs)
    with atomic_write(path) as f:
        for part in parts:
            f.write(part)
    return sum(len(part) for part in parts)


# -- reading -------------------------------------------------------------------------------------

def _unpack_unorm(v: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((v >> np.uint32(shift)) & np.uint32((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)


def is_compressed_ply(header) -> bool:
    return header.element("chunk") is not None and header.element("vertex") is not None and \
        header.element("vertex").property("packed_position") is not None


def read_compressed_ply(path) -> GaussianSet:
    """Read a PlayCanvas ``.compressed.ply`` into a :class:`GaussianSet`."""
    from .ply_header import parse_header

    p = Path(path)
    if not p.is_file():
        raise SundaeError(f"{path}: no such file")
    try:
        with open(p, "rb") as f:
            header = parse_header(f, path)
            f.seek(header.body_offset)
            body = f.read()
    except OSError as e:
        raise SundaeError(f"{path}: cannot read: {e.strerror or e}") from None
    if header.format != "binary_little_endian" or not is_compressed_ply(header):
        raise SundaeError(f"{path}: not a PlayCanvas compressed PLY (needs binary little-endian "
                          f"'chunk' and 'vertex' elements with packed_* properties)")
    chunk, vertex, sh_el = header.element("chunk"), header.element("vertex"), header.element("sh")
    names = [e.name for e in header.elements]
    if names not in (["chunk", "vertex"], ["chunk", "vertex", "sh"]):
        raise SundaeError(f"{path}: unexpected elements {names} for a compressed PLY")
    n = vertex.count
    if n == 0:
        raise SundaeError(f"{path}: contains no Gaussians")
    cprops = [q.name for q in chunk.properties]
    if cprops not in (CHUNK_PROPS, CHUNK_PROPS[:12]) or any(q.type != "f4" for q in chunk.properties):
        raise SundaeError(f"{path}: compressed PLY chunk properties are not the expected float32 set")
    if [q.name for q in vertex.properties] != VERTEX_PROPS or any(q.type != "u4" for q in vertex.properties):
        raise SundaeError(f"{path}: compressed PLY vertex properties are not the four packed uint32")
    if chunk.count != (n + CHUNK - 1) // CHUNK:
        raise SundaeError(f"{path}: {chunk.count} chunks do not match {n} Gaussians")
    n_rest = 0
    if sh_el is not None:
        n_rest = len(sh_el.properties)
        if n_rest not in (9, 24, 45) or sh_el.count != n or any(q.type != "u1" for q in sh_el.properties) or \
                [q.name for q in sh_el.properties] != [f"f_rest_{i}" for i in range(n_rest)]:
            raise SundaeError(f"{path}: compressed PLY 'sh' element is not {n} rows of 9/24/45 uchar f_rest_*")
    sizes = [chunk.count * 4 * len(cprops), n * 16, n * n_rest]
    if len(body) < sum(sizes):
        raise SundaeError(f"{path}: file truncated: {sum(sizes)} bytes of data expected, {len(body)} found")
    c = np.frombuffer(body, "<f4", chunk.count * len(cprops)).reshape(chunk.count, len(cprops)).astype(np.float64)
    v = np.frombuffer(body, "<u4", n * 4, sizes[0]).reshape(n, 4)
    ci = np.arange(n) // CHUNK

    def lerp(lo, hi, t):
        return lo[ci] * (1 - t) + hi[ci] * t

    def unpack111011(x, lo, hi):
        t = np.stack([_unpack_unorm(x, 21, 11), _unpack_unorm(x, 11, 10), _unpack_unorm(x, 0, 11)], 1)
        return lerp(lo, hi, t)

    means = unpack111011(v[:, 0], c[:, 0:3], c[:, 3:6])
    scales = unpack111011(v[:, 2], c[:, 6:9], c[:, 9:12])
    col = np.stack([_unpack_unorm(v[:, 3], 24, 8), _unpack_unorm(v[:, 3], 16, 8), _unpack_unorm(v[:, 3], 8, 8)], 1)
    if len(cprops) == 18:
        col = lerp(c[:, 12:15], c[:, 15:18], col)
    alpha = np.clip(_unpack_unorm(v[:, 3], 0, 8), 1e-4, 1 - 1e-4)
    r = v[:, 1]
    abc = np.stack([_unpack_unorm(r, 20, 10), _unpack_unorm(r, 10, 10), _unpack_unorm(r, 0, 10)], 1)
    abc = (abc - 0.5) * np.sqrt(2.0)
    m = np.sqrt(np.maximum(0.0, 1.0 - (abc * abc).sum(1)))
    which = (r >> np.uint32(30)).astype(np.int64)
    q = np.empty((n, 4))
    for w in range(4):
        sel = which == w
        others = [i for i in range(4) if i != w]
        q[sel, w] = m[sel]
        q[np.ix_(sel, others)] = abc[sel]
    k = n_rest // 3 + 1
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0] = (col - 0.5) / SH_C0
    if n_rest:
        b = np.frombuffer(body, np.uint8, n * n_rest, sizes[0] + sizes[1]).reshape(n, n_rest).astype(np.float64)
        t = np.where(b == 0, 0.0, np.where(b == 255, 1.0, (b + 0.5) / 256.0))
        sh[:, 1:] = ((t - 0.5) * 8.0).reshape(n, 3, k - 1).transpose(0, 2, 1)
    return GaussianSet(means=means, quats=normalize_quats(q.astype(np.float32)), scales=scales,
                       opacities=np.log(alpha / (1 - alpha)), sh=sh,
                       meta={"source": str(path), "source_bytes": p.stat().st_size,
                             "format": "compressed.ply", "source_count": n})
