"""The ``.sundae`` container: write, read (verified) and inspect.

Layout (full spec: ``formats/SUNDAE.md``)::

    0       8 bytes   magic  b"\\x89SUNDAE\\n"
    8       uint32    format version (4; versions 1 and 2, and 3 = level-of-detail ladders, are still read)
    12      uint32    H = header length
    16      H bytes   header, UTF-8 JSON (counts, codec meta, section table, source, pipeline, net)
    16+H    uint32    CRC-32 of bytes [0, 16+H)
    20+H    ...       sections, back to back in table order (each zstd or raw, CRC-32 in the table)

:func:`write_bundle` is atomic (:func:`~sundae_compress.io.atomic.atomic_write`). :func:`read_bundle` checks magic,
version, lengths, every checksum and bounds every allocation by the header's counts before
decompressing; any problem is one :class:`BundleError` line.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import zstandard

from .._version import __version__
from ..codec import CodecSettings, codec_version, compress, decode_gaussians, decompress, encode_gaussians, section_lengths
from ..errors import BundleError, SundaeError
from ..gaussians import SH_COEFFS, GaussianSet
from .atomic import atomic_write

MAGIC = b"\x89SUNDAE\n"
#: Format version written; readers accept every version in :data:`READ_VERSIONS` (v1: SH by k-means
#: only; v2: adds the scalar per-band SH mode and the ``codec.version`` key; v4: colour coded in an
#: orthonormal colour basis, DC by uniform steps). Version 3 is the level-of-detail ladder.
VERSION = 4
#: Format version of a level-of-detail ladder (several levels in one file, coarse first; see
#: :mod:`sundae_compress.io.ladder`; its levels keep codec layout 2). Single-level bundles are
#: written as :data:`VERSION`.
LADDER_VERSION = 3
READ_VERSIONS = (1, 2, 3, 4)
#: Fixed prefix: magic, version, header length.
PREFIX = struct.Struct("<8sII")
#: Longest header a reader accepts.
MAX_HEADER_BYTES = 16 << 20
#: Name of the optional neural-compensation section.
NET_SECTION = "net.onnx"
#: Largest net a reader accepts (raw bytes).
MAX_NET_BYTES = 1 << 30
#: A bundle may expand to at most ``MAX_RATIO * file size + RATIO_SLACK`` bytes: its raw sections
#: plus the decoded float32 arrays (real bundles expand 5-20x: SH3 + 8 features is the worst case;
#: anything far beyond is a decompression bomb).
MAX_RATIO = 32
RATIO_SLACK = 1 << 20


def _expanded_bytes(raw_total: int, n: int, sh_degree: int, num_features: int) -> int:
    """Raw section bytes plus the decoded GaussianSet (float32 means, quats, scales, opacity, SH, features)."""
    return raw_total + 4 * n * (11 + 3 * SH_COEFFS.get(sh_degree, 16) + num_features)


@dataclass
class SectionInfo:
    """One entry of the section table. ``offset`` is absolute (from the start of the file)."""
    name: str
    offset: int
    length: int
    raw_length: int
    crc: int
    codec: str = "zstd"


@dataclass
class Bundle:
    gaussians: GaussianSet
    net: Optional[bytes]
    net_meta: Optional[dict]
    header: dict
    sections: List[SectionInfo]
    file_bytes: int


@dataclass
class BundleStats:
    """What :func:`write_bundle` wrote."""
    path: str
    file_bytes: int
    count: int
    header_bytes: int
    sections: List[SectionInfo] = field(default_factory=list)

    @property
    def bits_per_gaussian(self) -> float:
        return 8.0 * self.file_bytes / max(self.count, 1)

    def section_bytes(self) -> Dict[str, int]:
        return {s.name: s.length for s in self.sections}


# -- writing -----------------------------------------------------------------------------------

def _source_info(gs: GaussianSet) -> Optional[dict]:
    m = gs.meta or {}
    if "source" not in m and "source_bytes" not in m:
        return None
    out = {"file": os.path.basename(str(m.get("source", ""))) or None, "bytes": m.get("source_bytes"),
           "count": m.get("source_count")}
    if isinstance(m.get("source_count"), int):
        out["valid"] = m["source_count"] - int(m.get("dropped_rows") or 0)
    return out


def _json_safe(obj, what: str):
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SundaeError(f"{what} is not JSON-serialisable: {e}") from None


def build_bundle(gs: GaussianSet, *, settings: CodecSettings | None = None, net: bytes | None = None,
                 net_meta: dict | None = None, info: dict | None = None, version: int = VERSION):
    """The bundle's bytes as ``(prefix+header+crc, [section blobs], header dict)`` (nothing written).

    ``version=1`` writes the legacy layout (kept only so tests can check that v1 files still read)."""
    s = settings or CodecSettings()
    if version not in (1, 2, VERSION):  # LADDER_VERSION files come from io.ladder
        raise SundaeError(f"cannot write bundle format version {version!r}")
    try:
        s.validate()
        raw, meta = encode_gaussians(gs, s, version=version)
    except ValueError as e:
        raise SundaeError(f"cannot encode the scene: {e}") from None
    if net is None and net_meta is not None:
        raise SundaeError("net_meta given without a net")
    blobs = []
    table = []
    offset = 0

    def add(name, data, level, allow_raw=False):
        nonlocal offset
        z = compress(data, level)
        codec = "zstd"
        if allow_raw and len(z) >= len(data):
            z, codec = bytes(data), "raw"
        table.append({"name": name, "offset": offset, "length": len(z), "raw_length": len(data),
                      "codec": codec, "crc32": zlib.crc32(z)})
        blobs.append(z)
        offset += len(z)

    for name, data in raw.items():
        add(name, data, s.zstd_level)
    if net is not None:
        add(NET_SECTION, bytes(net), s.zstd_level, allow_raw=True)
    info = dict(info or {})
    lo, hi = gs.bounds()
    header = {
        "format": "sundae",
        "version": version,
        "created_by": f"sundae-compress {__version__}",
        "count": len(gs),
        "sh_degree": gs.sh_degree,
        "num_features": gs.num_features,
        "bounds": {"min": lo.tolist(), "max": hi.tolist()},
        "codec": meta,
        "sections": table,
        "source": _json_safe(info.pop("source", None) or _source_info(gs), "source info"),
        "pipeline": _json_safe(info.pop("pipeline", None), "pipeline info"),
        "net": None if net is None else dict(_json_safe(net_meta or {}, "net_meta"), section=NET_SECTION,
                                              bytes=len(net)),
        "extra": _json_safe(info, "info") if info else None,
    }
    hb = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(hb) > MAX_HEADER_BYTES:
        raise SundaeError(f"bundle header would be {len(hb)} bytes (limit {MAX_HEADER_BYTES})")
    total = _expanded_bytes(sum(t["raw_length"] for t in table), len(gs), gs.sh_degree, gs.num_features)
    size = PREFIX.size + len(hb) + 4 + offset
    if total > MAX_RATIO * size + RATIO_SLACK:
        raise SundaeError("scene is too degenerate to store (compresses beyond the format's ratio bound)")
    head = PREFIX.pack(MAGIC, version, len(hb)) + hb
    head += struct.pack("<I", zlib.crc32(head))
    return head, blobs, header


def write_bundle(path, gs: GaussianSet, *, settings: CodecSettings | None = None, net: bytes | None = None,
                 net_meta: dict | None = None, info: dict | None = None, version: int = VERSION) -> BundleStats:
    """Encode ``gs`` (and the optional ONNX ``net`` with its ``net_meta``) into a ``.sundae`` file.

    ``info`` may hold ``source`` (file, bytes, count, valid; derived from ``gs.meta`` when absent)
    and ``pipeline`` (ratio, method, gamma, fine-tune settings) dicts; other keys go to ``extra``.
    Atomic: the file appears complete or not at all. Raises :class:`SundaeError` on failure.
    """
    path = Path(path)
    head, blobs, header = build_bundle(gs, settings=settings, net=net, net_meta=net_meta, info=info, version=version)
    with atomic_write(path, fsync=True) as f:
        f.write(head)
        for b in blobs:
            f.write(b)
    base = len(head)
    secs = [SectionInfo(t["name"], base + t["offset"], t["length"], t["raw_length"], t["crc32"], t["codec"])
            for t in header["sections"]]
    return BundleStats(str(path), base + sum(len(b) for b in blobs), len(gs), len(head), secs)


# -- reading -----------------------------------------------------------------------------------

def _int(v, lo, hi):
    return not isinstance(v, bool) and isinstance(v, int) and lo <= v <= hi


def _parse_head(path, data: bytes, partial: bool = False):
    """Check the prefix and header checksum of ``data``; return (header, version, D) where D is the
    offset of the data area. ``partial``: ``data`` may be a prefix of the file (streaming)."""
    name = str(path)

    def bad(msg):
        return BundleError(f"corrupt bundle {name}: {msg}")

    if len(data) < PREFIX.size or data[:8] != MAGIC:
        if len(data) < 8 and MAGIC.startswith(data):
            raise bad("truncated (file ends inside the magic)")
        raise BundleError(f"{name}: not a .sundae bundle (bad magic)")
    _, version, hlen = PREFIX.unpack_from(data)
    if version not in READ_VERSIONS:
        if version > max(READ_VERSIONS):
            raise BundleError(f"{name}: bundle format version {version} is newer than this reader "
                              f"(supports up to {max(READ_VERSIONS)}); upgrade sundae-compress")
        raise bad(f"unknown format version {version}")
    if hlen > MAX_HEADER_BYTES:
        raise bad(f"header length {hlen} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    base = PREFIX.size + hlen + 4
    if base > len(data):
        raise bad(f"truncated (header needs {base} bytes, file has {len(data)})")
    (crc,) = struct.unpack_from("<I", data, PREFIX.size + hlen)
    if zlib.crc32(data[:PREFIX.size + hlen]) != crc:
        raise bad("header checksum mismatch")
    hbytes = data[PREFIX.size:PREFIX.size + hlen]
    if version == LADDER_VERSION:  # a v3 header is one zstd frame of the JSON (it repeats per level)
        try:
            size = zstandard.frame_content_size(hbytes)
        except zstandard.ZstdError as e:
            raise bad(f"header is not a zstd frame ({e})") from None
        if not 0 <= size <= MAX_HEADER_BYTES:
            raise bad(f"header frame declares {size} bytes (limit {MAX_HEADER_BYTES})")
        try:
            hbytes = decompress(hbytes, size)
        except ValueError as e:
            raise bad(f"header: {e}") from None
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise bad(f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != "sundae" or header.get("version") != version:
        raise bad("header does not describe a sundae bundle of this version")
    return header, version, base


def _section_table(bad, table, base: int, pos: int, limit: int, what: str = "") -> List[SectionInfo]:
    """Validate a section table whose first section starts at data-area offset ``pos`` and which must
    lie inside the first ``limit`` bytes of the file; returns its sections (absolute offsets)."""
    if not isinstance(table, list) or len(table) > 64:
        raise bad(f"bad section table{what}")
    sections: List[SectionInfo] = []
    for t in table:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise bad(f"bad section table entry{what}")
        nm = t["name"]
        if any(s.name == nm for s in sections):
            raise bad(f"section {nm!r}{what} appears twice")
        if not (_int(t.get("offset"), 0, limit) and _int(t.get("length"), 0, limit)
                and _int(t.get("raw_length"), 0, 1 << 48) and _int(t.get("crc32"), 0, 0xFFFFFFFF)
                and t.get("codec") in ("zstd", "raw")):
            raise bad(f"section {nm!r}{what} has a bad table entry")
        if t["offset"] != pos:
            raise bad(f"section {nm!r}{what} does not start where the previous one ends")
        if base + pos + t["length"] > limit:
            raise bad(f"truncated (section {nm!r}{what} runs past the end of the file)")
        if t["codec"] == "raw" and t["raw_length"] != t["length"]:
            raise bad(f"section {nm!r}{what} is stored raw but its lengths differ")
        sections.append(SectionInfo(nm, base + pos, t["length"], t["raw_length"], t["crc32"], t["codec"]))
        pos += t["length"]
    return sections


def _check_crcs(bad, data: bytes, sections: List[SectionInfo], what: str = "") -> None:
    for s in sections:
        if zlib.crc32(data[s.offset:s.offset + s.length]) != s.crc:
            raise bad(f"section {s.name!r}{what} checksum mismatch")


def _codec_lengths(bad, meta, version: int) -> Dict[str, int]:
    """Raw section lengths the codec parameters imply (bounds every allocation); checks the layout
    version (a v3 ladder stores codec-v2 levels)."""
    try:
        want = section_lengths(meta)
    except (ValueError, TypeError, KeyError) as e:
        raise bad(f"bad codec parameters ({e})") from None
    layout = 2 if version == LADDER_VERSION else version
    if codec_version(meta) != layout:
        raise bad(f"codec layout version {codec_version(meta)} does not match the file version {version}")
    return want


def _parse(path, data: bytes):
    """Check the prefix, header checksum and section table of ``data`` (a version 1 or 2 file);
    return (header, sections)."""
    name = str(path)

    def bad(msg):
        return BundleError(f"corrupt bundle {name}: {msg}")

    header, version, base = _parse_head(path, data)
    if version == LADDER_VERSION:
        raise BundleError(f"{name}: a level-of-detail ladder (format version 3); read it with read_bundle")
    sections = _section_table(bad, header.get("sections"), base, 0, len(data))
    pos = sum(s.length for s in sections)
    if base + pos != len(data):
        raise bad(f"{len(data) - base - pos} bytes after the last section")
    _check_crcs(bad, data, sections)
    # every allocation below is bounded by these checks
    meta = header.get("codec")
    want = _codec_lengths(bad, meta, version)
    if header.get("count") != meta["n"] or header.get("sh_degree") != meta["sh_degree"] \
            or header.get("num_features") != meta["num_features"]:
        raise bad("header counts disagree with the codec parameters")
    names = {s.name for s in sections}
    net = header.get("net")
    expected = set(want) | ({NET_SECTION} if net is not None else set())
    if names != expected:
        raise bad(f"sections {sorted(names)} do not match the expected {sorted(expected)}")
    for s in sections:
        if s.name in want and s.raw_length != want[s.name]:
            raise bad(f"section {s.name!r} declares {s.raw_length} raw bytes, expected {want[s.name]}")
        if s.name == NET_SECTION and (s.raw_length > MAX_NET_BYTES or not isinstance(net, dict)
                                      or net.get("bytes") != s.raw_length):
            raise bad("bad net section")
    total = _expanded_bytes(sum(s.raw_length for s in sections), meta["n"], meta["sh_degree"], meta["num_features"])
    if total > MAX_RATIO * len(data) + RATIO_SLACK:
        raise bad(f"declares {total} raw bytes, more than a file of {len(data)} bytes can hold")
    return header, sections


def _read_file(path) -> bytes:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read: {e.strerror or e}") from None


def read_bundle(path, level: Optional[int] = None) -> Bundle:
    """Read and verify a ``.sundae`` file. Raises :class:`BundleError` (one line) on any problem.

    ``level``: which level of a level-of-detail ladder (format version 3; 0 = coarsest, default the
    finest; see :mod:`sundae_compress.io.ladder`). A single-level bundle has only level 0; any other
    level is a :class:`SundaeError`."""
    data = _read_file(path)
    header, version, base = _parse_head(path, data)
    if version == LADDER_VERSION:
        return read_level(path, data, header, base, level)
    if level is not None:
        check_level(path, level, 1)
    header, sections = _parse(path, data)
    raw = {}
    for s in sections:
        blob = data[s.offset:s.offset + s.length]
        try:
            raw[s.name] = blob if s.codec == "raw" else decompress(blob, s.raw_length)
        except ValueError as e:
            raise BundleError(f"corrupt bundle {path}: section {s.name!r}: {e}") from None
    net = raw.pop(NET_SECTION, None)
    try:
        gs = decode_gaussians(raw, header["codec"])
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise BundleError(f"corrupt bundle {path}: {e}") from None
    gs.meta = {"bundle": str(path), "source_info": header.get("source"), "pipeline": header.get("pipeline")}
    net_meta = None
    if header.get("net") is not None:
        net_meta = {k: v for k, v in header["net"].items() if k not in ("section", "bytes")}
    return Bundle(gs, net, net_meta, header, sections, len(data))


# -- level-of-detail ladders (version 3; writing: :mod:`sundae_compress.io.ladder`) -----------

#: Most levels one ladder may hold.
MAX_LEVELS = 16


def parse_levels(path, data: bytes, header: dict, base: int, *, partial: bool = False,
                 check: Optional[int] = None) -> List[dict]:
    """Validate the level table of a version 3 header. Returns one dict per level: ``count``,
    ``stored``, ``base``, ``start``/``end`` (absolute byte range of its own sections), ``meta``,
    ``sections`` (SectionInfo), ``entry`` (the header entry). Checks the CRCs of every level (or,
    with ``check`` = k, of level k and the levels it extends). ``partial``: ``data`` may be a prefix
    of the file; a level whose bytes have not all arrived is listed but not checked."""
    name = str(path)

    def bad(msg):
        return BundleError(f"corrupt bundle {name}: {msg}")

    entries = header.get("levels")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_LEVELS:
        raise bad(f"bad level table (1 to {MAX_LEVELS} levels)")
    if header.get("net") is not None:
        raise bad("a ladder carries no compensation net")
    d, f = header.get("sh_degree"), header.get("num_features")
    levels: List[dict] = []
    pos = 0
    limit = len(data) if not partial else 1 << 62
    for k, e in enumerate(entries):
        what = f" of level {k}"
        if not isinstance(e, dict) or not _int(e.get("count"), 0, 1 << 28) or not _int(e.get("stored"), 0, 1 << 28):
            raise bad(f"bad level table entry {k}")
        b = e.get("base")
        if b is not None and not _int(b, 0, k - 1):
            raise bad(f"level {k} extends a level that does not precede it")
        if e["count"] != e["stored"] + (levels[b]["count"] if b is not None else 0):
            raise bad(f"level {k} declares {e['count']} Gaussians, its sections and base hold another number")
        if levels and e["count"] <= levels[-1]["count"]:
            raise bad(f"level {k} does not hold more Gaussians than level {k - 1}")
        sections = _section_table(bad, e.get("sections"), base, pos, limit, what)
        end = pos + sum(s.length for s in sections)
        if e.get("range") != [pos, end]:
            raise bad(f"level {k}'s range does not match its sections")
        meta = e.get("codec")
        want = _codec_lengths(bad, meta, LADDER_VERSION)
        if meta["n"] != e["stored"] or meta["sh_degree"] != d or meta["num_features"] != f:
            raise bad(f"level {k}'s counts disagree with its codec parameters")
        if {s.name for s in sections} != set(want):
            raise bad(f"sections {sorted(s.name for s in sections)}{what} do not match the expected {sorted(want)}")
        for s in sections:
            if s.raw_length != want[s.name]:
                raise bad(f"section {s.name!r}{what} declares {s.raw_length} raw bytes, expected {want[s.name]}")
        levels.append({"count": e["count"], "stored": e["stored"], "base": b, "start": base + pos,
                       "end": base + end, "meta": meta, "sections": sections, "entry": e})
        pos = end
    if header.get("count") != levels[-1]["count"]:
        raise bad("header count disagrees with the finest level")
    if not partial and base + pos != len(data):
        if base + pos > len(data):
            raise bad(f"truncated (levels need {base + pos} bytes, file has {len(data)})")
        raise bad(f"{len(data) - base - pos} bytes after the last section")
    todo = range(len(levels)) if check is None else _chain(levels, check)
    for k in todo:
        lv = levels[k]
        if lv["end"] > len(data):
            if partial and check is None:
                continue
            raise bad(f"truncated (level {k} needs the first {lv['end']} bytes, "
                      f"{'have' if partial else 'file has'} {len(data)})")
        _check_crcs(bad, data, lv["sections"], f" of level {k}")
        raw_total = sum(s.raw_length for j in _chain(levels, k) for s in levels[j]["sections"])
        if _expanded_bytes(raw_total, lv["count"], d, f) > MAX_RATIO * lv["end"] + RATIO_SLACK:
            raise bad(f"level {k} declares {raw_total} raw bytes, more than its {lv['end']} bytes can hold")
    return levels


def _chain(levels: List[dict], k: int) -> List[int]:
    """Level k and the levels it extends, coarsest first."""
    out = []
    j: Optional[int] = k
    while j is not None:
        out.append(j)
        j = levels[j]["base"]
    return out[::-1]


def check_level(path, level, n_levels: int) -> int:
    """``level`` as an index into a bundle of ``n_levels`` levels (None: the finest); raises
    :class:`SundaeError` naming the levels that exist."""
    if level is None:
        return n_levels - 1
    have = "level 0 only" if n_levels == 1 else f"levels 0-{n_levels - 1} (0 = coarsest)"
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < n_levels:
        raise SundaeError(f"{path} has no level {level}: it holds {have}")
    return level


def _decode_level(path, data: bytes, header: dict, levels: List[dict], k: int) -> Bundle:
    parts = []
    for j in _chain(levels, k):
        lv = levels[j]
        raw = {}
        for s in lv["sections"]:
            try:
                raw[s.name] = decompress(data[s.offset:s.offset + s.length], s.raw_length)
            except ValueError as e:
                raise BundleError(f"corrupt bundle {path}: section {s.name!r} of level {j}: {e}") from None
        try:
            parts.append(decode_gaussians(raw, lv["meta"]))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise BundleError(f"corrupt bundle {path}: level {j}: {e}") from None
    gs = parts[0] if len(parts) == 1 else GaussianSet.concat(parts)
    entry = levels[k]["entry"]
    gs.meta = {"bundle": str(path), "source_info": header.get("source"), "pipeline": entry.get("pipeline"),
               "level": k, "levels": len(levels)}
    sections = [s for j in _chain(levels, k) for s in levels[j]["sections"]]
    lheader = dict(header, count=levels[k]["count"], codec=levels[k]["meta"], level=k,
                   pipeline=entry.get("pipeline") or header.get("pipeline"))
    return Bundle(gs, None, None, lheader, sections, len(data))


def read_level(path, data: bytes, header: dict, base: int, level=None, *, partial: bool = False) -> Bundle:
    """Decode one level (default the finest) of a version 3 file whose head is already checked."""
    entries = header.get("levels")
    n = len(entries) if isinstance(entries, list) else 0
    if n:
        level = check_level(path, level, n)
    # a whole file is verified whole (every checksum); a prefix only as far as the level needs
    levels = parse_levels(path, data, header, base, partial=partial, check=level if partial else None)
    return _decode_level(path, data, header, levels, level if level is not None else len(levels) - 1)


def ladder_summary(path, data: bytes, header: dict, base: int) -> List[dict]:
    """Per level (coarse to fine): count, own bytes, prefix bytes, base, codec settings, pipeline and
    the measured fidelity recorded by the writer (``sundae-inspect``)."""
    levels = parse_levels(path, data, header, base)
    out = []
    for k, lv in enumerate(levels):
        e = lv["entry"]
        out.append({"level": k, "count": lv["count"], "stored": lv["stored"], "base": lv["base"],
                    "bytes": lv["end"] - lv["start"], "prefix_bytes": lv["end"],
                    "bits_per_gaussian": round(8.0 * (lv["end"] - lv["start"]) / lv["stored"], 3)
                    if lv["stored"] else None,
                    "settings": lv["meta"]["settings"], "pipeline": e.get("pipeline"),
                    "fidelity": e.get("fidelity"),
                    "sections": [{"name": s.name, "bytes": s.length, "raw_bytes": s.raw_length, "codec": s.codec}
                                 for s in lv["sections"]]})
    return out


# -- inspection --------------------------------------------------------------------------------

def inspect_bundle(path) -> dict:
    """JSON-serialisable summary of a bundle (verifies its checksums; does not decode Gaussians)."""
    data = _read_file(path)
    header, version, base = _parse_head(path, data)
    if version == LADDER_VERSION:
        return _inspect_ladder(path, data, header, base)
    header, sections = _parse(path, data)
    n = header["count"]
    size = len(data)

    def bpg(b):
        return round(8.0 * b / n, 3) if n else None

    net = header.get("net")
    net_sec = next((s for s in sections if s.name == NET_SECTION), None)
    return {
        **_inspect_common(path, header, size),
        "header_bytes": sections[0].offset if sections else size,
        "sections": [{"name": s.name, "bytes": s.length, "raw_bytes": s.raw_length, "codec": s.codec,
                      "share": round(s.length / size, 4), "bits_per_gaussian": bpg(s.length)} for s in sections],
        "settings": header["codec"]["settings"],
        "sh_codebook_entries": (header["codec"].get("sh_rest") or {}).get("codebook_size"),
        "net": {"present": net is not None, "bytes": net_sec.raw_length if net_sec else 0,
                "stored_bytes": net_sec.length if net_sec else 0,
                "params": (net or {}).get("params"),
                "meta": {k: v for k, v in (net or {}).items() if k not in ("section", "bytes")} or None},
        "pipeline": header.get("pipeline"),
    }


def _inspect_common(path, header: dict, size: int) -> dict:
    """The keys every :func:`inspect_bundle` result starts with (single-level and ladder alike)."""
    n = header["count"]
    src = dict(header.get("source") or {})
    if isinstance(src.get("bytes"), int) and src["bytes"] > 0:
        src["compression_ratio"] = round(src["bytes"] / size, 2)
    return {"path": str(path), "format_version": header["version"], "created_by": header.get("created_by"),
            "file_bytes": size, "count": n, "sh_degree": header["sh_degree"], "num_features": header["num_features"],
            "bounds": header.get("bounds"), "bits_per_gaussian": round(8.0 * size / n, 3) if n else None,
            "source": src or None}


def _inspect_ladder(path, data: bytes, header: dict, base: int) -> dict:
    """:func:`inspect_bundle` of a level-of-detail ladder: the finest level's figures at the top
    level (as for a single-level bundle) plus ``levels``, one entry per level, coarse to fine."""
    levels = ladder_summary(path, data, header, base)
    size = len(data)
    sections = [{"name": f"L{lv['level']}/{s['name']}", "bytes": s["bytes"], "raw_bytes": s["raw_bytes"],
                 "codec": s["codec"], "share": round(s["bytes"] / size, 4),
                 "bits_per_gaussian": round(8.0 * s["bytes"] / lv["stored"], 3) if lv["stored"] else None}
                for lv in levels for s in lv["sections"]]
    for lv in levels:
        lv.pop("sections")
    return {
        **_inspect_common(path, header, size),
        "header_bytes": base,
        "sections": sections,
        "settings": levels[-1]["settings"],
        "sh_codebook_entries": None,
        "net": {"present": False, "bytes": 0, "stored_bytes": 0, "params": None, "meta": None},
        "pipeline": header.get("pipeline"),
        "levels": levels,
    }
