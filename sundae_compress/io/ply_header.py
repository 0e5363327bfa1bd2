"""Parsing of PLY headers, bounded and with one-line errors.

:func:`parse_header` reads the ASCII header at the start of a PLY file and returns a
:class:`PlyHeader`: the body format, the elements with their properties, and the byte offset at
which the body starts. It never reads more than :data:`MAX_HEADER_BYTES`, and never trusts a
count for allocation (the reader checks counts against the file size).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..errors import PlyError

#: A header longer than this is treated as corrupt (real 3DGS headers are a few kB).
MAX_HEADER_BYTES = 1 << 20

#: PLY scalar type names (both spellings) -> numpy type code without byte order.
PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}

#: Body formats and the numpy byte-order prefix for each (None: ASCII text).
FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}


@dataclass
class PlyProperty:
    name: str
    type: str  # numpy code, e.g. "f4"
    list_count_type: Optional[str] = None  # numpy code of the count for list properties

    @property
    def is_list(self) -> bool:
        return self.list_count_type is not None


@dataclass
class PlyElement:
    name: str
    count: int
    properties: List[PlyProperty] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.is_list for p in self.properties)

    def dtype(self, byte_order: str) -> np.dtype:
        """Packed structured dtype of one row (only for elements without list properties)."""
        return np.dtype([(p.name, byte_order + p.type) for p in self.properties])

    def property(self, name: str) -> Optional[PlyProperty]:
        for p in self.properties:
            if p.name == name:
                return p
        return None


@dataclass
class PlyHeader:
    format: str
    elements: List[PlyElement]
    body_offset: int
    #: number of text lines in the header (the body starts on line ``header_lines + 1``)
    header_lines: int = 0
    comments: List[str] = field(default_factory=list)

    @property
    def byte_order(self) -> Optional[str]:
        return FORMATS[self.format]

    def element(self, name: str) -> Optional[PlyElement]:
        for e in self.elements:
            if e.name == name:
                return e
        return None


#: The line that ends the header (a whole line, not the word inside a comment).
_END_HEADER = re.compile(rb"\nend_header[ \t]*\r?\n")
_END_HEADER_AT_EOF = re.compile(rb"\nend_header[ \t]*\r?\Z")


def _read_header_bytes(f, path) -> bytes:
    """The header bytes up to and including the ``end_header`` line."""
    buf = b""
    while True:
        chunk = f.read(65536)
        if not buf and not chunk.startswith(b"ply"):
            what = "it is empty" if not chunk else "it does not start with 'ply'"
            raise PlyError(f"{path}: not a PLY file ({what})")
        buf += chunk
        m = _END_HEADER.search(buf)
        if m:
            return buf[: m.end()]
        if not chunk and _END_HEADER_AT_EOF.search(buf):  # no newline after end_header
            return buf + b"\n"
        if len(buf) > MAX_HEADER_BYTES:
            raise PlyError(f"{path}: PLY header is not terminated within {MAX_HEADER_BYTES} bytes "
                           f"(no 'end_header' line; the file is corrupt)")
        if not chunk:
            raise PlyError(f"{path}: PLY header is not terminated (no 'end_header' line; "
                           f"the file is truncated or corrupt)")


def _parse_count(text: str, path, lineno: int) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise PlyError(f"{path}: PLY header line {lineno}: element count {text!r} is not a "
                       f"non-negative integer")
    return n


def _ply_type(name: str, path, lineno: int) -> str:
    t = PLY_TYPES.get(name)
    if t is None:
        raise PlyError(f"{path}: PLY header line {lineno}: unknown property type {name!r} "
                       f"(known: {', '.join(sorted(set(PLY_TYPES)))})")
    return t


def parse_header(f, path) -> PlyHeader:
    """Parse the header of the open binary file ``f`` (positioned at 0)."""
    raw = _read_header_bytes(f, path)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise PlyError(f"{path}: PLY header contains non-ASCII bytes (the file is corrupt)") from None
    lines = text.split("\n")
    if lines[0].strip() != "ply":
        raise PlyError(f"{path}: not a PLY file (first line is {lines[0].strip()[:40]!r}, expected 'ply')")
    fmt = None
    elements: List[PlyElement] = []
    comments: List[str] = []
    for lineno, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == "end_header":
            break
        if key in ("comment", "obj_info"):
            comments.append(line.strip()[len(key):].strip())
        elif key == "format":
            if len(words) < 2 or words[1] not in FORMATS:
                got = words[1] if len(words) > 1 else ""
                raise PlyError(f"{path}: unknown PLY format {got!r} (expected one of "
                               f"{', '.join(FORMATS)})")
            fmt = words[1]
        elif key == "element":
            if len(words) != 3:
                raise PlyError(f"{path}: PLY header line {lineno}: malformed element line {line.strip()!r}")
            elements.append(PlyElement(words[1], _parse_count(words[2], path, lineno)))
        elif key == "property":
            if not elements:
                raise PlyError(f"{path}: PLY header line {lineno}: property before any element")
            el = elements[-1]
            if len(words) == 5 and words[1] == "list":
                prop = PlyProperty(words[4], _ply_type(words[3], path, lineno),
                                   _ply_type(words[2], path, lineno))
            elif len(words) == 3:
                prop = PlyProperty(words[2], _ply_type(words[1], path, lineno))
            else:
                raise PlyError(f"{path}: PLY header line {lineno}: malformed property line {line.strip()!r}")
            if el.property(prop.name) is not None:
                raise PlyError(f"{path}: element '{el.name}' declares property '{prop.name}' twice")
            el.properties.append(prop)
        else:
            raise PlyError(f"{path}: PLY header line {lineno}: unexpected keyword {key!r}")
    if fmt is None:
        raise PlyError(f"{path}: PLY header has no 'format' line")
    return PlyHeader(format=fmt, elements=elements, body_offset=len(raw),
                     header_lines=raw.count(b"\n"), comments=comments)
