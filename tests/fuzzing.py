"""Seeded mutation fuzzing of the two readers of untrusted input: ``read_ply`` and ``read_bundle``.

Shared by ``tests/test_fuzz.py`` (a few hundred cases) and ``benchmarks/bench_fuzz.py`` (≥ 10,000).

Every case is a small valid file (a *seed*: PLY in several layouts, bundles with and without SH,
features and a net) put through one to three mutations: generic byte-level ones (truncation,
flipped bits, overwritten / inserted / deleted / duplicated ranges, appended garbage) and
format-aware ones:

* PLY: absurd or malformed element counts, wrong / unknown / list property types, dropped,
  duplicated or reordered property lines, other body formats, huge headers, missing
  ``end_header``, non-ASCII header bytes, elements before the vertex element, CRLF lines.
* bundle: the JSON header is edited (absurd counts, SH degree, feature count, codebook size,
  codec settings, NaN / wrong-shape bounds, broken section tables, deep nesting) and then
  re-serialised with a *valid* header length and CRC, so the reader's count checks themselves
  are exercised, not just its checksum; "forged" bundles go further and rebuild every section as
  a zstd frame of the exact raw length the absurd counts imply, with valid CRCs (zip bombs); and
  section payloads are replaced by corrupt or random zstd frames with fixed-up CRCs.

:func:`run_case` reads one mutated file and classifies the outcome:

* ``ok`` -- the file was read;
* ``error`` -- a :class:`~sundae_compress.errors.SundaeError` with a one-line message (allowed);
* ``crash`` -- any other exception (or a multi-line / empty message);
* ``hang`` -- the read took longer than ``time_limit`` CPU seconds (SIGPROF; SIGALRM after
  ``wall_limit`` wall seconds as a backstop);
* ``memory`` -- the traced peak allocation (tracemalloc, which also sees numpy buffers) exceeded
  ``mem_base + mem_factor × file size``.

Only ``ok`` and ``error`` are acceptable.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import struct
import time
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from sundae_compress.errors import SundaeError
from sundae_compress.gaussians import SH_COEFFS, GaussianSet, normalize_quats

MB = 1 << 20
ACCEPTED = ("ok", "error")


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------
def random_scene(n: int, seed: int, sh_degree: int = 3, features: int = 0) -> GaussianSet:
    rng = np.random.default_rng(seed)
    k = SH_COEFFS[sh_degree]
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0] = rng.normal(0, 1, (n, 3))
    sh[:, 1:] = rng.normal(0, 0.1, (n, k - 1, 3))
    return GaussianSet(means=rng.uniform(-1, 1, (n, 3)), quats=normalize_quats(rng.normal(size=(n, 4))),
                       scales=rng.normal(-4, 0.5, (n, 3)), opacities=rng.normal(1, 1.5, n), sh=sh,
                       features=rng.normal(size=(n, features)) if features else None)


def _ply_bytes(gs: GaussianSet, fmt: str = "binary_little_endian", types: Optional[Dict[str, str]] = None,
               before: str = "", after: str = "", pre: bytes = b"") -> bytes:
    """A 3DGS PLY written by hand (so the seeds cover layouts write_ply never produces)."""
    from sundae_compress.io.ply import _inria_names, _inria_table

    names = _inria_names(gs.sh_degree)
    table = _inria_table(gs).astype(np.float64)
    types = types or {}
    head = f"ply\nformat {fmt} 1.0\ncomment fuzz seed\n{before}element vertex {len(gs)}\n"
    head += "".join(f"property {types.get(n, 'float')} {n}\n" for n in names) + after + "end_header\n"
    if fmt == "ascii":
        body = "".join(" ".join(repr(float(v)) if types.get(n, "float") in ("float", "double") else str(int(v))
                                for n, v in zip(names, row)) + "\n" for row in table).encode()
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        code = {"float": "f4", "double": "f8", "uchar": "u1", "short": "i2", "int": "i4"}
        dt = np.dtype([(n, order + code[types.get(n, "float")]) for n in names])
        rec = np.zeros(len(gs), dt)
        for j, n in enumerate(names):
            rec[n] = table[:, j]
        body = rec.tobytes()
    return head.encode() + pre + body


def ply_seeds() -> List[Tuple[str, bytes]]:
    a = random_scene(24, 1, 3)
    b = random_scene(40, 2, 0)
    c = random_scene(8, 3, 1)
    mixed = {"opacity": "double", "scale_0": "double", "f_dc_0": "double", "nx": "uchar", "ny": "short", "nz": "int"}
    return [
        ("le_sh3", _ply_bytes(a)),
        ("le_sh0", _ply_bytes(b)),
        ("be_sh1", _ply_bytes(c, "binary_big_endian")),
        ("ascii_sh1", _ply_bytes(c, "ascii")),
        ("le_mixed_types", _ply_bytes(b, types=mixed)),
        ("le_elements", _ply_bytes(c, before="element extra 2\nproperty float a\nproperty uchar b\n",
                                   pre=bytes(10))),
        ("le_face_after", _ply_bytes(c, after="element face 1\nproperty list uchar int vertex_indices\n")
         + b"\x03\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"),
    ]


def bundle_seeds(tmp: Path) -> List[Tuple[str, bytes]]:
    from sundae_compress.codec import CodecSettings
    from sundae_compress.io.bundle import write_bundle

    out = []
    rng = np.random.default_rng(7)
    specs = [  # v4 (colour steps, scalar SH by default), other v4 modes, a legacy v2 and a legacy v1 file
        ("sh3_features", random_scene(60, 4, 3, features=4), None, {}, 4),
        ("sh0", random_scene(30, 5, 0), None, {}, 4),
        ("sh1_one", random_scene(1, 6, 1), None, {}, 4),
        ("sh2_net", random_scene(50, 8, 2, features=2), bytes(rng.integers(0, 256, 300, dtype=np.uint8)),
         {"scale_mode": "codebook", "opacity_mode": "codebook", "color_mode": "linear"}, 4),
        ("sh2_vq", random_scene(40, 9, 2), None, {"sh_mode": "vq", "color_mode": "codebook"}, 4),
        ("v2_sh2", random_scene(40, 11, 2), None, {}, 2),
        ("v1_sh1_net", random_scene(40, 10, 1, features=1), bytes(range(40)), {"sh_mode": "vq"}, 1),
    ]
    for name, gs, net, settings, version in specs:
        p = tmp / f"seed_{name}.sundae"
        write_bundle(p, gs, settings=CodecSettings(sh_codebook_size=16, zstd_level=3, **settings), net=net,
                     net_meta={"params": 10, "kind": "fuzz"} if net is not None else None,
                     info={"source": {"file": "fuzz.ply", "bytes": 1000, "count": len(gs)}}, version=version)
        out.append((name, p.read_bytes()))
    return out


# ---------------------------------------------------------------------------------------------
# generic byte mutations
# ---------------------------------------------------------------------------------------------
INTERESTING = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE]


def m_truncate(d: bytes, rng) -> bytes:
    return d[: int(rng.integers(0, len(d)))] if d else d


def m_flip_bits(d: bytes, rng) -> bytes:
    if not d:
        return d
    b = bytearray(d)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(b)


def m_overwrite(d: bytes, rng) -> bytes:
    if not d:
        return d
    b = bytearray(d)
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(0, len(b)))
        if rng.random() < 0.5:
            b[i] = INTERESTING[int(rng.integers(0, len(INTERESTING)))]
        else:
            w = int(rng.integers(1, 9))
            b[i:i + w] = bytes(rng.integers(0, 256, w, dtype=np.uint8))
    return bytes(b)


def m_insert(d: bytes, rng) -> bytes:
    i = int(rng.integers(0, len(d) + 1))
    return d[:i] + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)) + d[i:]


def m_delete(d: bytes, rng) -> bytes:
    if len(d) < 2:
        return d
    i = int(rng.integers(0, len(d) - 1))
    return d[:i] + d[i + int(rng.integers(1, min(256, len(d) - i) + 1)):]


def m_duplicate(d: bytes, rng) -> bytes:
    if len(d) < 2:
        return d
    i = int(rng.integers(0, len(d) - 1))
    j = min(len(d), i + int(rng.integers(1, 512)))
    return d[:j] + d[i:j] + d[j:]


def m_append(d: bytes, rng) -> bytes:
    return d + bytes(rng.integers(0, 256, int(rng.integers(1, 2048)), dtype=np.uint8))


BYTE_MUTATORS = [m_truncate, m_flip_bits, m_overwrite, m_insert, m_delete, m_duplicate, m_append]


# ---------------------------------------------------------------------------------------------
# PLY-aware mutations (edit the ASCII header, keep the body)
# ---------------------------------------------------------------------------------------------
ABSURD_COUNTS = ["0", "-1", "1", "2147483647", "2147483648", "4294967296", "18446744073709551616",
                 "99999999999999999999999999999999", "1e9", "0x10", "abc", "", "3.5", "+5", "١٢".encode().decode("latin-1")]
PLY_TYPE_WORDS = ["float", "double", "uchar", "char", "short", "ushort", "int", "uint", "int8", "uint8",
                  "int16", "uint16", "int32", "uint32", "float32", "float64", "list uchar int",
                  "list int float", "list uint double", "list float float", "bogus", "", "float float"]


def _split_ply(d: bytes) -> Tuple[List[str], bytes]:
    m = re.search(rb"end_header[ \t]*\r?\n", d)
    end = m.end() if m else len(d)
    return d[:end].decode("latin-1").split("\n"), d[end:]


def _join_ply(lines: List[str], body: bytes) -> bytes:
    return "\n".join(lines).encode("latin-1") + body


def _lines_matching(lines, prefix):
    return [i for i, ln in enumerate(lines) if ln.startswith(prefix)]


def p_count(d, rng):
    lines, body = _split_ply(d)
    idx = _lines_matching(lines, "element ")
    if not idx:
        return d
    i = idx[int(rng.integers(0, len(idx)))]
    w = lines[i].split(" ")
    if len(w) >= 3:
        w[2] = ABSURD_COUNTS[int(rng.integers(0, len(ABSURD_COUNTS)))] if rng.random() < 0.7 \
            else str(int(w[2]) + int(rng.integers(-3, 4)) if w[2].lstrip("-").isdigit() else 1)
    lines[i] = " ".join(w)
    return _join_ply(lines, body)


def p_type(d, rng):
    lines, body = _split_ply(d)
    idx = _lines_matching(lines, "property ")
    if not idx:
        return d
    for _ in range(int(rng.integers(1, 4))):
        i = idx[int(rng.integers(0, len(idx)))]
        name = lines[i].split(" ")[-1]
        lines[i] = f"property {PLY_TYPE_WORDS[int(rng.integers(0, len(PLY_TYPE_WORDS)))]} {name}".replace("  ", " ")
    return _join_ply(lines, body)


def p_props(d, rng):
    lines, body = _split_ply(d)
    idx = _lines_matching(lines, "property ")
    if not idx:
        return d
    i = idx[int(rng.integers(0, len(idx)))]
    op = int(rng.integers(0, 5))
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[i])
    elif op == 2:
        j = idx[int(rng.integers(0, len(idx)))]
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3:
        lines[i] = lines[i].rsplit(" ", 1)[0] + " " + ["x", "f_rest_99", "f_rest_0", "rot_0", "", "vertex"][
            int(rng.integers(0, 6))]
    else:
        lines.insert(i, "property float junk_" + str(int(rng.integers(0, 1000))))
    return _join_ply(lines, body)


def p_format(d, rng):
    lines, body = _split_ply(d)
    idx = _lines_matching(lines, "format ")
    fmt = ["ascii", "binary_big_endian", "binary_little_endian", "binary", "", "ascii ascii"][int(rng.integers(0, 6))]
    new = f"format {fmt} {['1.0', '2.0', '', 'x'][int(rng.integers(0, 4))]}".strip()
    if idx:
        if rng.random() < 0.15:
            del lines[idx[0]]
        else:
            lines[idx[0]] = new
    return _join_ply(lines, body)


def p_huge_header(d, rng):
    lines, body = _split_ply(d)
    size = int(rng.choice([1 << 16, (1 << 20) - 100, (1 << 20) + 100, 3 << 20]))
    if rng.random() < 0.5:
        lines.insert(2, "comment " + "x" * size)
    else:
        lines[2:2] = ["comment pad"] * (size // 12)
    return _join_ply(lines, body)


def p_no_end(d, rng):
    return d.replace(b"end_header", [b"end_heade", b"end header", b"", b"comment end_header"][int(rng.integers(0, 4))], 1)


def p_non_ascii(d, rng):
    lines, body = _split_ply(d)
    i = int(rng.integers(1, max(2, len(lines) - 1)))
    lines[i] = lines[i] + ["\xff", "\x00", "é", "\x80\x81"][int(rng.integers(0, 4))]
    return _join_ply(lines, body)


def p_element(d, rng):
    lines, body = _split_ply(d)
    idx = _lines_matching(lines, "element vertex")
    if not idx:
        return d
    count = ABSURD_COUNTS[int(rng.integers(0, len(ABSURD_COUNTS)))] if rng.random() < 0.5 else str(int(rng.integers(0, 5)))
    new = [[f"element face {count}", "property list uchar int vertex_indices"],
           [f"element extra {count}", "property double a"],
           [f"element vertex {count}", "property float x"],
           ["element vertex"]][int(rng.integers(0, 4))]
    at = idx[0] if rng.random() < 0.7 else len(lines) - 2
    lines[at:at] = new
    return _join_ply(lines, body)


def p_crlf(d, rng):
    lines, body = _split_ply(d)
    return "\r\n".join(lines).encode("latin-1") + body


def p_rename_vertex(d, rng):
    return d.replace(b"element vertex", [b"element vertices", b"element Vertex", b"element  vertex"][int(rng.integers(0, 3))], 1)


PLY_MUTATORS = [p_count, p_type, p_props, p_format, p_huge_header, p_no_end, p_non_ascii, p_element, p_crlf,
                p_rename_vertex]


# ---------------------------------------------------------------------------------------------
# bundle-aware mutations: edit the header JSON, then re-serialise with valid lengths and CRCs
# ---------------------------------------------------------------------------------------------
def split_bundle(d: bytes):
    """``(header dict, [section blobs])`` of a well-formed bundle (None if not parseable)."""
    from sundae_compress.io.bundle import PREFIX

    try:
        _, _, hlen = PREFIX.unpack_from(d)
        header = json.loads(d[PREFIX.size:PREFIX.size + hlen])
        base = PREFIX.size + hlen + 4
        blobs = [d[base + t["offset"]: base + t["offset"] + t["length"]] for t in header["sections"]]
        return header, blobs
    except Exception:
        return None


def join_bundle(header, blobs: List[bytes], *, fix_table: bool = True, raw_header: Optional[bytes] = None) -> bytes:
    """Serialise ``header`` + ``blobs`` with a valid header length and CRC (and, with
    ``fix_table``, section offsets / lengths / CRCs that match the blobs)."""
    from sundae_compress.io.bundle import MAGIC, PREFIX, READ_VERSIONS, VERSION

    version = header.get("version") if isinstance(header, dict) else None
    version = version if version in READ_VERSIONS and not isinstance(version, bool) else VERSION  # keep v1 seeds v1
    if fix_table and isinstance(header, dict) and isinstance(header.get("sections"), list):
        off = 0
        for t, b in zip(header["sections"], blobs):
            if isinstance(t, dict):
                t["offset"], t["length"], t["crc32"] = off, len(b), zlib.crc32(b)
            off += len(b)
    hb = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    head = PREFIX.pack(MAGIC, version, len(hb)) + hb
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(blobs)


ABSURD_INTS = [0, 1, -1, 2, 3, 4, 16, 255, 4096, 4097, 1 << 24, (1 << 24) + 1, 1 << 28, (1 << 28) + 1, 1 << 31,
               1 << 32, 1 << 48, 1 << 63, 1 << 64, 10 ** 30]
ABSURD_VALUES = ABSURD_INTS + [1.5, -0.0, float("nan"), float("inf"), "7", "", None, True, False, [], {}, [1, 2]]


def _absurd(rng):
    if rng.random() < 0.6:
        return ABSURD_INTS[int(rng.integers(0, len(ABSURD_INTS)))]
    return ABSURD_VALUES[int(rng.integers(0, len(ABSURD_VALUES)))]


def _zstd(raw: bytes, level: int = 3) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)


def _zstd_zeros(n: int) -> bytes:
    """A zstd frame of ``n`` zero bytes, made without holding ``n`` bytes at once."""
    import io

    import zstandard

    buf = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=True)
    with cctx.stream_writer(buf, size=n, closefd=False) as w:
        chunk = bytes(min(n, 1 << 22))
        left = n
        while left > 0:
            w.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))
    return buf.getvalue()


def _on_parsed_bundle(mutate):
    """A mutator of the parsed (header, blobs) of a bundle, as a bytes -> bytes mutator; bytes that
    no longer split into header and sections are returned unchanged."""
    @functools.wraps(mutate)
    def wrapper(d, rng):
        sp = split_bundle(d)
        return d if sp is None else mutate(*sp, rng)

    return wrapper


@_on_parsed_bundle
def b_header_field(h, blobs, rng):
    """Edit one header / codec-meta field to an absurd value; valid CRC."""
    meta = h.get("codec") if isinstance(h.get("codec"), dict) else {}
    targets = [(h, "count"), (h, "sh_degree"), (h, "num_features"), (h, "version"), (h, "format"), (h, "net"),
               (h, "codec"), (h, "sections"), (meta, "n"), (meta, "sh_degree"), (meta, "num_features"),
               (meta, "settings"), (meta, "version")]
    for sec in ("means", "scales", "opacities", "sh_dc", "sh_rest", "features"):
        if isinstance(meta.get(sec), dict):
            targets += [(meta[sec], "lo"), (meta[sec], "hi"), (meta, sec)]
            if sec == "sh_rest":
                targets += [(meta[sec], "codebook_size"), (meta[sec], "bits")] * 3
    if isinstance(meta.get("settings"), dict):
        targets += [(meta["settings"], k) for k in meta["settings"]]
    for _ in range(int(rng.integers(1, 3))):
        obj, key = targets[int(rng.integers(0, len(targets)))]
        r = rng.random()
        if r < 0.1:
            obj.pop(key, None)
        elif r < 0.2 and isinstance(obj.get(key), list) and obj[key]:
            obj[key] = obj[key][:-1] if rng.random() < 0.5 else obj[key] + [float("nan")]
        elif r < 0.3 and isinstance(obj.get(key), list) and obj[key]:
            obj[key][int(rng.integers(0, len(obj[key])))] = [float("nan"), float("inf"), 1e308, "x", None][int(rng.integers(0, 5))]
        else:
            obj[key] = _absurd(rng)
    if rng.random() < 0.5 and h.get("count") is not None and isinstance(meta, dict) and "n" in meta:
        h["count"] = meta["n"]  # keep them in agreement so the deeper checks run
    return join_bundle(h, blobs)


@_on_parsed_bundle
def b_table(h, blobs, rng):
    """Break the section table (lengths, offsets, raw lengths, codecs, names, order); valid CRC."""
    tab = h["sections"]
    i = int(rng.integers(0, len(tab)))
    op = int(rng.integers(0, 9))
    fix = True
    if op == 0:
        tab[i]["raw_length"] = _absurd(rng)
    elif op == 1:
        tab[i]["codec"] = ["raw", "zstd", "lz4", None, 1][int(rng.integers(0, 5))]
    elif op == 2:
        tab[i]["name"] = ["means", "net.onnx", "bogus", "", None, tab[-1]["name"]][int(rng.integers(0, 6))]
    elif op == 3:
        del tab[i]
        del blobs[i]
    elif op == 4:
        tab.append(dict(tab[i]))
        blobs.append(blobs[i])
    elif op == 5:
        j = int(rng.integers(0, len(tab)))
        tab[i], tab[j] = tab[j], tab[i]
        blobs[i], blobs[j] = blobs[j], blobs[i]
    elif op == 6:
        fix = False
        tab[i][["offset", "length", "crc32"][int(rng.integers(0, 3))]] = _absurd(rng)
    elif op == 7:
        h["sections"] = [dict(tab[0]) for _ in range(int(rng.choice([65, 1000])))]
        fix = False
    else:
        tab[i] = _absurd(rng)
    return join_bundle(h, blobs, fix_table=fix)


@_on_parsed_bundle
def b_payload(h, blobs, rng):
    """Replace a section's payload (random bytes, corrupt zstd, random data of the right raw
    length, a frame declaring a different size) and fix its CRC in the table."""
    i = int(rng.integers(0, len(blobs)))
    t = h["sections"][i]
    raw_len = t.get("raw_length", 0) if isinstance(t.get("raw_length"), int) else 0
    op = int(rng.integers(0, 5))
    if op == 0:
        blobs[i] = bytes(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8))
    elif op == 1:
        blobs[i] = m_flip_bits(blobs[i], rng)
    elif op == 2:  # right length, random content: decoders must reject or accept, not crash
        blobs[i] = _zstd(bytes(rng.integers(0, 256, raw_len, dtype=np.uint8)))
    elif op == 3:  # right length, all 0xFF (out-of-range labels / positions, NaN codebooks)
        blobs[i] = _zstd(b"\xff" * raw_len)
    else:  # frame declaring a different size than the table says
        blobs[i] = _zstd(bytes(max(0, raw_len + int(rng.choice([-1, 1, 1000, 1 << 20])))))
    if t.get("codec") == "raw":
        t["raw_length"] = len(blobs[i])
    return join_bundle(h, blobs)


FORGE_N = [0, 1, 2, 1000, 1 << 16, 1 << 20, 3 << 20, 1 << 22, 1 << 24, 1 << 28, (1 << 28) + 1]
#: Forged bundles whose sections would hold more raw bytes than this get small bogus frames
#: (the reader must refuse them before decompressing).
FORGE_MAX_RAW = 256 << 20


@_on_parsed_bundle
def b_forge(h, blobs, rng):
    """A bundle with absurd counts that is otherwise fully consistent: every section is a zstd
    frame of exactly the raw length the counts imply (zeros, or 0xFF), all CRCs valid."""
    from sundae_compress.codec import section_lengths

    meta = h["codec"]
    n = int(FORGE_N[int(rng.integers(0, len(FORGE_N)))])
    meta["n"] = h["count"] = n
    if rng.random() < 0.3:
        meta["num_features"] = h["num_features"] = int(rng.choice([0, 1, 64, 4096]))
        meta.setdefault("features", {})
        meta["features"] = {"lo": [0.0] * meta["num_features"], "hi": [1.0] * meta["num_features"]}
    if rng.random() < 0.3 and isinstance(meta.get("sh_rest"), dict):
        if "bits" in meta["sh_rest"]:  # v2 scalar SH: the code width sets the section length
            meta["sh_rest"]["bits"] = int(rng.choice([1, 8, 9, 16]))
        else:
            meta["sh_rest"]["codebook_size"] = int(rng.choice([1, 2, n, max(1, n // 2), 1 << 24]))
    if rng.random() < 0.2:
        meta["settings"]["position_bits"] = int(rng.choice([8, 21]))
    try:
        want = section_lengths(meta)
    except Exception:
        return join_bundle(h, blobs)
    net = [(t, b) for t, b in zip(h["sections"], blobs) if t["name"] == "net.onnx"]
    fill = b"\xff" if rng.random() < 0.2 else b"\x00"
    total = sum(want.values())
    tab, new = [], []
    for name, length in want.items():
        if total <= FORGE_MAX_RAW:
            blob = _zstd_zeros(length) if fill == b"\x00" else _zstd(fill * length)
        else:
            blob = _zstd(b"")  # declares 0 bytes; the reader's bounds must catch this first
        tab.append({"name": name, "offset": 0, "length": len(blob), "raw_length": length, "codec": "zstd",
                    "crc32": 0})
        new.append(blob)
    for t, b in net:
        tab.append(t)
        new.append(b)
    h["sections"] = tab
    return join_bundle(h, new)


def forge_bundle(d: bytes, n: int) -> bytes:
    """``d`` re-declared with ``n`` Gaussians, every section a zstd frame of zeros of exactly the
    implied raw length, all lengths and CRCs valid: a zip bomb the reader must bound."""
    from sundae_compress.codec import section_lengths

    h, blobs = split_bundle(d)
    h["codec"]["n"] = h["count"] = n
    tab, new = [], []
    for name, length in section_lengths(h["codec"]).items():
        new.append(_zstd_zeros(length))
        tab.append({"name": name, "offset": 0, "length": 0, "raw_length": length, "codec": "zstd", "crc32": 0})
    h["sections"] = tab
    return join_bundle(h, new)


@_on_parsed_bundle
def b_header_bytes(h, blobs, rng):
    """Replace the header JSON by odd bytes (deep nesting, non-UTF-8, non-object, huge), valid CRC."""
    op = int(rng.integers(0, 6))
    if op == 0:
        depth = int(rng.choice([100, 10000, 200000]))
        raw = b"[" * depth + b"]" * depth
    elif op == 1:
        raw = b"\xff\xfe" + json.dumps(h).encode()
    elif op == 2:
        raw = json.dumps([h]).encode()
    elif op == 3:
        raw = json.dumps(h).encode() + b" " * int(rng.choice([10, (16 << 20) - 2000, (16 << 20) + 1]))
    elif op == 4:
        raw = json.dumps(h).encode().replace(b'"count"', b'"count":1,"count"', 1)
    else:
        raw = b'{"format":"sundae","version":1,"sections":' + b"[" * 5000 + b"]" * 5000 + b"}"
    return join_bundle(h, blobs, fix_table=False, raw_header=raw)


def b_prefix(d, rng):
    """Magic / version / header length edits (CRC left as is, or recomputed)."""
    from sundae_compress.io.bundle import PREFIX

    b = bytearray(d)
    op = int(rng.integers(0, 3))
    if op == 0:
        struct.pack_into("<I", b, 8, int(rng.choice([0, 2, 3, 255, 1 << 31, 0xFFFFFFFF])))
    elif op == 1:
        struct.pack_into("<I", b, 12, int(rng.choice([0, 1, 15, 16 << 20, (16 << 20) + 1, 0xFFFFFFFF, len(d)])))
    else:
        b[int(rng.integers(0, 8))] ^= 0x20
    if rng.random() < 0.5 and len(b) >= PREFIX.size:
        hlen = struct.unpack_from("<I", b, 12)[0]
        if PREFIX.size + hlen + 4 <= len(b):
            struct.pack_into("<I", b, PREFIX.size + hlen, zlib.crc32(bytes(b[:PREFIX.size + hlen])))
    return bytes(b)


BUNDLE_MUTATORS = [b_header_field, b_header_field, b_table, b_payload, b_payload, b_forge, b_forge,
                   b_header_bytes, b_prefix]


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    target: str  # "ply" | "bundle"
    index: int
    seed_name: str
    mutations: List[str]
    data: bytes


def generate_cases(target: str, count: int, seed: int, seeds: List[Tuple[str, bytes]]):
    """Yield ``count`` mutated files for ``target``, deterministic for ``seed``."""
    aware = PLY_MUTATORS if target == "ply" else BUNDLE_MUTATORS
    for i in range(count):
        rng = np.random.default_rng([seed, i, 0 if target == "ply" else 1])
        name, data = seeds[int(rng.integers(0, len(seeds)))]
        names = []
        for k in range(int(rng.choice([1, 1, 1, 2, 3]))):
            # format-aware first (they need a parseable file), then byte-level noise
            if k == 0 or rng.random() < 0.5:
                pool = aware if (k == 0 and rng.random() < 0.7) else BYTE_MUTATORS + aware
            else:
                pool = BYTE_MUTATORS
            fn = pool[int(rng.integers(0, len(pool)))]
            try:
                data = fn(data, rng)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError):
                continue  # an earlier mutation left nothing this one understands
            names.append(fn.__name__)
        yield Case(target, i, name, names, data)


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


@dataclass
class Result:
    outcome: str  # ok | error | crash | hang | memory
    seconds: float  # CPU seconds (the limit applies to these)
    peak_bytes: int
    file_bytes: int
    message: str = ""
    wall_seconds: float = 0.0


def reader_for(target: str) -> Callable:
    if target == "ply":
        from sundae_compress.io.ply import read_ply

        return read_ply
    from sundae_compress.io.bundle import read_bundle

    return read_bundle


def memory_limit(file_bytes: int, mem_base: int = 64 * MB, mem_factor: float = 16.0) -> float:
    return mem_base + mem_factor * file_bytes


def run_case(target: str, path: Path, *, time_limit: float = 5.0, mem_base: int = 64 * MB,
             mem_factor: float = 16.0, reader: Optional[Callable] = None, wall_limit: float = 120.0,
             trace_memory: bool = True) -> Result:
    """Read ``path`` with the ``target`` reader (or ``reader``) under a time limit and traced allocation.

    ``time_limit`` is CPU seconds (SIGPROF), so a heavily shared machine does not turn a slow case
    into a "hang"; ``wall_limit`` (SIGALRM) is the backstop for anything that blocks.
    ``trace_memory=False`` skips tracemalloc (it slows numpy-heavy code several times) and the
    memory limit."""
    reader = reader or reader_for(target)
    size = os.path.getsize(path)
    old = signal.signal(signal.SIGALRM, _alarm), signal.signal(signal.SIGPROF, _alarm)
    if trace_memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    outcome, msg = "ok", ""
    try:
        signal.setitimer(signal.ITIMER_PROF, time_limit)
        signal.setitimer(signal.ITIMER_REAL, wall_limit)
        try:
            reader(path)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        outcome, msg = "hang", f"no answer within {time_limit} CPU s / {wall_limit} s"
    except SundaeError as e:
        text = str(e)
        if not text or "\n" in text:
            outcome, msg = "crash", f"SundaeError message is not one line: {text!r}"
        else:
            outcome, msg = "error", text
    except BaseException as e:  # noqa: BLE001 -- anything else is a bug in the reader
        if isinstance(e, KeyboardInterrupt):
            raise
        import traceback

        tb = traceback.extract_tb(e.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        outcome, msg = "crash", f"{type(e).__name__} at {where}: {str(e)[:300]}"
    finally:
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
        if trace_memory:
            tracemalloc.stop()
        signal.signal(signal.SIGALRM, old[0])
        signal.signal(signal.SIGPROF, old[1])
    if outcome in ACCEPTED and peak > memory_limit(size, mem_base, mem_factor):
        outcome, msg = "memory", f"peak {peak / MB:.1f} MB for a {size}-byte file ({msg[:200]})"
    return Result(outcome, cpu, peak, size, msg, wall)


def fuzz(target: str, count: int, seed: int, workdir: Path, *, time_limit: float = 5.0,
         on_result: Optional[Callable[[Case, Result], None]] = None) -> Dict:
    """Run ``count`` cases against ``target``; return a summary (counts, max time, max memory,
    the failures with how to reproduce them)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = ply_seeds() if target == "ply" else bundle_seeds(workdir)
    path = workdir / ("case.ply" if target == "ply" else "case.sundae")
    counts = {k: 0 for k in ("ok", "error", "crash", "hang", "memory")}
    by_mutation: Dict[str, Dict[str, int]] = {}
    failures = []
    max_s = max_wall = max_peak = 0.0
    max_peak_case = None
    for case in generate_cases(target, count, seed, seeds):
        path.write_bytes(case.data)
        r = run_case(target, path, time_limit=time_limit)
        counts[r.outcome] += 1
        for m in set(case.mutations):
            by_mutation.setdefault(m, {}).setdefault(r.outcome, 0)
            by_mutation[m][r.outcome] += 1
        max_s = max(max_s, r.seconds)
        max_wall = max(max_wall, r.wall_seconds)
        if r.peak_bytes > max_peak:
            max_peak, max_peak_case = r.peak_bytes, (case.index, case.seed_name, case.mutations, r.file_bytes)
        if r.outcome not in ACCEPTED:
            failures.append({"index": case.index, "seed": case.seed_name, "mutations": case.mutations,
                             "outcome": r.outcome, "message": r.message, "file_bytes": r.file_bytes})
            if len(failures) <= 20:
                (workdir / f"fail_{target}_{case.index}.bin").write_bytes(case.data)
        if on_result:
            on_result(case, r)
    return {"target": target, "cases": count, "seed": seed, "counts": counts, "max_seconds": max_s,
            "max_wall_seconds": max_wall,
            "max_peak_bytes": int(max_peak), "max_peak_case": max_peak_case, "by_mutation": by_mutation,
            "failures": failures}
