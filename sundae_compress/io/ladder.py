"""Level-of-detail ladders: several levels of one scene in one ``.sundae`` file (format version 3).

Layout (full spec: ``formats/SUNDAE.md`` §9)::

    0       8 bytes   magic  b"\\x89SUNDAE\\n"
    8       uint32    format version 3
    12      uint32    H = header length
    16      H bytes   header: one zstd frame of UTF-8 JSON: common keys + "levels" (coarse -> fine),
                      each with its codec parameters, its section table and its byte range
    16+H    uint32    CRC-32 of bytes [0, 16+H)
    20+H    ...       level 0's sections, then level 1's, ... (back to back)

Level k is decodable from the first ``20 + H + levels[k].range[1]`` bytes of the file: a streaming
reader shows the coarse level before the finer ones have arrived (:func:`read_level_prefix`). A
level either stores all its Gaussians (``base`` null) or extends a coarser level (``base`` = that
level's index; its Gaussians come first, then the level's own).

This module writes ladders and reads levels from a prefix; reading a level of a whole file
(``read_bundle(path, level=k)``) and the level-table checks live in :mod:`.bundle` (re-exported here).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .._version import __version__
from ..codec import CodecSettings, compress, decode_gaussians, encode_gaussians
from ..errors import BundleError, SundaeError
from ..gaussians import GaussianSet
from .atomic import atomic_write
from .bundle import (LADDER_VERSION, MAGIC, MAX_HEADER_BYTES, MAX_LEVELS, MAX_RATIO, PREFIX, RATIO_SLACK, Bundle,
                     _expanded_bytes, _int, _json_safe, _parse_head, _source_info, check_level, ladder_summary,
                     parse_levels, read_level)

#: The version 3 header is one zstd frame of the JSON, at this level.
HEADER_ZSTD_LEVEL = 19


__all__ = ["EncodedLevel", "LadderStats", "MAX_LEVELS", "build_ladder", "check_level", "decoded_levels",
           "encode_level", "ladder_summary", "parse_levels", "prefix_bytes", "read_level", "read_level_prefix",
           "write_ladder"]


# -- writing -----------------------------------------------------------------------------------

@dataclass
class EncodedLevel:
    """One level, encoded (nothing written yet). ``own``: the Gaussians this level stores; ``base``:
    the index of the coarser level whose Gaussians come first (None: the level stands alone)."""
    own: GaussianSet
    settings: CodecSettings
    base: Optional[int] = None
    info: Dict = field(default_factory=dict)  # pipeline / fidelity, stored in the level's header entry
    raw: Dict[str, bytes] = field(default_factory=dict)
    meta: Dict = field(default_factory=dict)
    blobs: Dict[str, bytes] = field(default_factory=dict)

    @property
    def stored_bytes(self) -> int:
        return sum(len(b) for b in self.blobs.values())


def encode_level(own: GaussianSet, settings: CodecSettings, base: Optional[int] = None,
                 info: Optional[dict] = None) -> EncodedLevel:
    """Quantise and compress one level's own Gaussians (codec v2 layout)."""
    try:
        settings.validate()
        raw, meta = encode_gaussians(own, settings, version=2)  # ladder levels keep layout 2
    except ValueError as e:
        raise SundaeError(f"cannot encode the scene: {e}") from None
    blobs = {name: compress(data, settings.zstd_level) for name, data in raw.items()}
    return EncodedLevel(own, settings, base, dict(info or {}), raw, meta, blobs)


def decoded_levels(levels: Sequence[EncodedLevel]) -> List[GaussianSet]:
    """What a reader decodes for each level (base Gaussians first), from the encoded sections."""
    out: List[GaussianSet] = []
    for lv in levels:
        own = decode_gaussians(lv.raw, lv.meta)
        out.append(own if lv.base is None else GaussianSet.concat([out[lv.base], own]))
    return out


def build_ladder(levels: Sequence[EncodedLevel], *, info: Optional[dict] = None):
    """The ladder's bytes as ``(prefix+header+crc, [section blobs], header dict)``."""
    if not 1 <= len(levels) <= MAX_LEVELS:
        raise SundaeError(f"a ladder holds 1 to {MAX_LEVELS} levels, not {len(levels)}")
    first = levels[0].own
    counts: List[int] = []
    entries = []
    blobs: List[bytes] = []
    offset = 0
    for k, lv in enumerate(levels):
        if lv.own.sh_degree != first.sh_degree or lv.own.num_features != first.num_features:
            raise SundaeError("every level of a ladder must have the same SH degree and feature count")
        if lv.base is not None and not 0 <= lv.base < k:
            raise SundaeError(f"level {k} cannot extend level {lv.base}")
        count = len(lv.own) + (counts[lv.base] if lv.base is not None else 0)
        if counts and count <= counts[-1]:
            raise SundaeError(f"level {k} ({count} Gaussians) must hold more Gaussians than level {k - 1} "
                              f"({counts[-1]}): levels go from coarse to fine")
        counts.append(count)
        start = offset
        table = []
        for name, data in lv.raw.items():
            z = lv.blobs[name]
            table.append({"name": name, "offset": offset, "length": len(z), "raw_length": len(data),
                          "codec": "zstd", "crc32": zlib.crc32(z)})
            blobs.append(z)
            offset += len(z)
        entry = {"count": count, "stored": len(lv.own), "base": lv.base, "range": [start, offset],
                 "codec": lv.meta, "sections": table}
        entry.update(_json_safe(lv.info, f"level {k} info"))
        entries.append(entry)
    info = dict(info or {})
    finest = levels[-1].own
    lo, hi = finest.bounds()
    header = {
        "format": "sundae",
        "version": LADDER_VERSION,
        "created_by": f"sundae-compress {__version__}",
        "count": counts[-1],
        "sh_degree": first.sh_degree,
        "num_features": first.num_features,
        "bounds": {"min": lo.tolist(), "max": hi.tolist()},
        "levels": entries,
        "source": _json_safe(info.pop("source", None) or _source_info(finest), "source info"),
        "pipeline": _json_safe(info.pop("pipeline", None), "pipeline info"),
        "net": None,
        "extra": _json_safe(info, "info") if info else None,
    }
    hb = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(hb) > MAX_HEADER_BYTES:
        raise SundaeError(f"bundle header would be {len(hb)} bytes (limit {MAX_HEADER_BYTES})")
    hb = compress(hb, HEADER_ZSTD_LEVEL)  # the JSON repeats per level: 5.2 KB -> 1.6 KB for 3 levels
    head = PREFIX.pack(MAGIC, LADDER_VERSION, len(hb)) + hb
    head += struct.pack("<I", zlib.crc32(head))
    for k, e in enumerate(entries):
        raw_total = sum(_level_raw(entries, k))
        if _expanded_bytes(raw_total, e["count"], first.sh_degree, first.num_features) \
                > MAX_RATIO * (len(head) + e["range"][1]) + RATIO_SLACK:
            raise SundaeError("scene is too degenerate to store (compresses beyond the format's ratio bound)")
    return head, blobs, header


def _level_raw(entries, k) -> List[int]:
    """Raw section lengths of level k and of every level it extends."""
    out = []
    while k is not None:
        out += [t["raw_length"] for t in entries[k]["sections"]]
        k = entries[k]["base"]
    return out


@dataclass
class LadderStats:
    """What :func:`write_ladder` wrote: the file size and, per level, its Gaussian count, the bytes
    of its own sections and the prefix a reader needs to decode it."""
    path: str
    file_bytes: int
    header_bytes: int
    levels: List[Dict]


def write_ladder(path, levels: Sequence[EncodedLevel], *, info: Optional[dict] = None) -> LadderStats:
    """Write the encoded ``levels`` (coarse to fine) as one version 3 ``.sundae`` file, atomically."""
    head, blobs, header = build_ladder(levels, info=info)
    with atomic_write(Path(path), fsync=True) as f:
        f.write(head)
        for b in blobs:
            f.write(b)
    size = len(head) + sum(len(b) for b in blobs)
    return LadderStats(str(path), size, len(head), [
        {"count": e["count"], "stored": e["stored"], "bytes": e["range"][1] - e["range"][0],
         "prefix_bytes": len(head) + e["range"][1]} for e in header["levels"]])


# -- reading -----------------------------------------------------------------------------------

def read_level_prefix(data: bytes, level: int = 0, name: str = "<stream>") -> Bundle:
    """Decode ``level`` from the first bytes of a ladder as they arrive (a streaming reader).

    ``data`` must hold at least :func:`prefix_bytes` (``data``, ``level``) bytes; anything after them
    is ignored. Raises :class:`BundleError` when too few bytes have arrived."""
    header, version, base = _parse_head(name, data, partial=True)
    if version != LADDER_VERSION:
        raise BundleError(f"{name}: a single-level bundle (format version {version}); only ladders "
                          f"(version 3) decode from a prefix")
    return read_level(name, data, header, base, level, partial=True)


def prefix_bytes(data: bytes, level: int = 0, name: str = "<stream>") -> int:
    """How many bytes of the file a reader needs to decode ``level``: ``20 + H + range[1]`` of that
    level (``data`` needs to hold the file's first ``20 + H`` bytes)."""
    header, version, base = _parse_head(name, data, partial=True)
    if version != LADDER_VERSION:
        raise BundleError(f"{name}: not a level-of-detail ladder")
    entries = header.get("levels") or []
    k = check_level(name, level, len(entries))
    end = (entries[k].get("range") or [0, 0])[1]
    if not _int(end, 0, 1 << 48):
        raise BundleError(f"corrupt bundle {name}: bad level table")
    return base + end
