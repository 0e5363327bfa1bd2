"""Reading and writing 3DGS scenes as PLY files.

:func:`read_ply` accepts any PLY whose ``vertex`` element holds the usual 3DGS properties, found
by name in any order: ``x y z``, ``f_dc_0..2``, optional ``f_rest_*`` (0, 9, 24 or 45 of them,
channel-major: all red coefficients, then green, then blue), ``opacity`` (logit),
``scale_0..2`` (log-scales) and ``rot_0..3`` (quaternion w, x, y, z). Binary (either byte
order) and ASCII bodies and every PLY scalar type are read; rows with NaN/Inf in a used
property are dropped; a scene whose centres reach beyond ±``MAX_COORD`` (1e8) is refused. Every
problem is a one-line :class:`~sundae_compress.errors.PlyError`.

:func:`write_ply` writes the standard INRIA layout (binary little-endian float32, with zero
normals) atomically. ``write_ply`` followed by ``read_ply`` gives back the same arrays bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import PlyError, SundaeError
from ..gaussians import SH_COEFFS, GaussianSet, normalize_quats
from .atomic import atomic_write
from .ply_header import PlyElement, PlyHeader, parse_header

__all__ = ["read_ply", "write_ply", "REQUIRED_PROPERTIES"]

MEANS = ["x", "y", "z"]
#: Largest |centre coordinate| accepted. float32 keeps 24 bits, so at 1e8 neighbouring centres
#: are 8 units apart: a scene reaching beyond is garbage (typically a wrong property type or byte
#: order in the header) that no float32 renderer can draw, and it is refused.
MAX_COORD = 1e8
DC = ["f_dc_0", "f_dc_1", "f_dc_2"]
SCALES = ["scale_0", "scale_1", "scale_2"]
ROTS = ["rot_0", "rot_1", "rot_2", "rot_3"]
#: Properties every 3DGS vertex must have.
REQUIRED_PROPERTIES = MEANS + DC + ["opacity"] + SCALES + ROTS

#: Number of f_rest properties in a file -> SH degree.
_REST_TO_DEGREE = {3 * (k - 1): d for d, k in SH_COEFFS.items()}


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def _vertex_element(header: PlyHeader, path) -> Tuple[PlyElement, List[PlyElement]]:
    """The vertex element and the elements stored before it in the body."""
    for i, el in enumerate(header.elements):
        if el.name == "vertex":
            if el.has_lists:
                names = [p.name for p in el.properties if p.is_list]
                raise PlyError(f"{path}: the 'vertex' element has list properties ({', '.join(names)}); "
                               f"3DGS vertices hold scalars only")
            return el, header.elements[:i]
    names = ", ".join(repr(e.name) for e in header.elements) or "none"
    raise PlyError(f"{path}: no 'vertex' element (wrong element name? the file has: {names})")


def _rest_count(vertex: PlyElement, path) -> int:
    """Number of f_rest_* properties, checked to be complete and a valid SH size."""
    rest = [p.name for p in vertex.properties if p.name.startswith("f_rest_")]
    n = len(rest)
    if n not in _REST_TO_DEGREE:
        raise PlyError(f"{path}: {n} f_rest_* properties is not a valid SH size "
                       f"(expected 0, 9, 24 or 45 for SH degree 0, 1, 2 or 3)")
    missing = [f"f_rest_{i}" for i in range(n) if vertex.property(f"f_rest_{i}") is None]
    if missing:
        raise PlyError(f"{path}: f_rest_* properties are not numbered 0..{n - 1} "
                       f"(missing {', '.join(missing[:5])})")
    return n


def _pick_degree(file_degree: int, sh_degree: Optional[int], path) -> int:
    if sh_degree is None:
        return file_degree
    if sh_degree not in SH_COEFFS:
        raise SundaeError(f"SH degree must be 0, 1, 2 or 3, got {sh_degree}")
    if sh_degree > file_degree:
        raise SundaeError(f"{path} holds SH degree {file_degree}; cannot read it with SH degree "
                          f"{sh_degree} (only the same or a lower degree is possible)")
    return sh_degree


def _copy_columns(dst: np.ndarray, src: np.ndarray, index: List[int]) -> None:
    """``dst[:] = src[:, index]``, copied in runs of adjacent source columns.

    Much faster than fancy indexing on wide tables: each run is one strided block copy (which
    also converts the type and byte order). Doubles too large for float32 become inf.
    """
    j = 0
    with np.errstate(over="ignore", invalid="ignore"):
        while j < len(index):
            k = j + 1
            while k < len(index) and index[k] == index[k - 1] + 1:
                k += 1
            dst[:, j:k] = src[:, index[j]: index[j] + k - j]
            j = k


def _finite_rows(a: np.ndarray) -> np.ndarray:
    """Rows of the 2D float32 array ``a`` without NaN/Inf.

    A row sum is non-finite whenever the row holds NaN/Inf (and rarely on overflow), so only the
    few rows with a non-finite sum are checked element by element.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # huge finite values may overflow the sum
        s = a @ np.ones(a.shape[1], a.dtype)
    ok = np.isfinite(s)
    suspects = np.flatnonzero(~ok)
    if len(suspects):
        ok[suspects] = np.isfinite(a[suspects]).all(axis=1)
    return ok


def _assemble(src: np.ndarray, names: List[str], n_rest_file: int, degree: int) -> dict:
    """The GaussianSet arrays (float32, quaternions not yet normalised) from the 2D table ``src``
    whose columns are the vertex properties ``names``."""
    col = {name: i for i, name in enumerate(names)}
    n, k, per = len(src), SH_COEFFS[degree], n_rest_file // 3

    def take(dst, props):
        _copy_columns(dst, src, [col[p] for p in props])
        return dst

    sh = np.empty((n, k, 3), np.float32)
    take(sh[:, 0, :], DC)
    rest = [[col[f"f_rest_{c * per + j}"] for j in range(k - 1)] for c in range(3)]  # channel-major
    flat = [i for channel in rest for i in channel]
    if flat and flat == list(range(flat[0], flat[0] + len(flat))):  # the usual layout: one block
        with np.errstate(over="ignore", invalid="ignore"):
            sh[:, 1:] = src[:, flat[0]: flat[0] + len(flat)].reshape(n, 3, k - 1).transpose(0, 2, 1)
    else:
        for c in range(3):
            _copy_columns(sh[:, 1:, c], src, rest[c])
    return {"means": take(np.empty((n, 3), np.float32), MEANS),
            "quats": take(np.empty((n, 4), np.float32), ROTS),
            "scales": take(np.empty((n, 3), np.float32), SCALES),
            "opacities": take(np.empty((n, 1), np.float32), ["opacity"])[:, 0],
            "sh": sh}


def _read_binary(f, path, header: PlyHeader, vertex: PlyElement, before: List[PlyElement],
                 file_size: int) -> np.ndarray:
    """The vertex rows as a 2D array, one column per property (in file order)."""
    order = header.byte_order
    offset = header.body_offset
    for el in before:
        if el.has_lists:
            raise PlyError(f"{path}: cannot skip element '{el.name}' stored before 'vertex' "
                           f"(it has list properties, so its size is unknown)")
        offset += el.count * el.dtype(order).itemsize
    dtype = vertex.dtype(order)
    need = vertex.count * dtype.itemsize
    have = max(file_size - offset, 0)
    if need > have:
        raise PlyError(f"{path}: file truncated: header declares {vertex.count} vertices "
                       f"({need} bytes) but only {have} bytes of data follow")
    f.seek(offset)
    raw = np.fromfile(f, dtype=dtype, count=vertex.count)
    if len(raw) != vertex.count:  # the file changed under us
        raise PlyError(f"{path}: file truncated while reading ({len(raw)} of {vertex.count} vertices)")
    types = {p.type for p in vertex.properties}
    if len(types) == 1:  # one scalar type: a plain matrix view, no copy
        return raw.view(order + types.pop()).reshape(len(raw), len(vertex.properties))
    table = np.empty((len(raw), len(vertex.properties)), np.float64)  # exact for every PLY type
    with np.errstate(over="ignore", invalid="ignore"):  # NaN / huge floats are dealt with later
        for j, p in enumerate(vertex.properties):
            table[:, j] = raw[p.name]
    return table


def _read_ascii(f, path, header: PlyHeader, vertex: PlyElement, before: List[PlyElement]) -> np.ndarray:
    """The vertex rows as a 2D float64 array, one column per property (in file order)."""
    f.seek(header.body_offset)
    skip = sum(el.count for el in before)  # ASCII PLY: one line per element row
    text = f.read().decode("latin-1")
    # bound the split by the text length: a header count beyond it can only mean a truncated file
    lines = text.split("\n", min(skip + vertex.count, len(text) + 1))
    at_end = len(lines) <= skip + vertex.count  # no text after the vertex rows
    available = len(lines) - skip - (1 if at_end and not lines[-1].strip() else 0)
    if available < vertex.count:
        raise PlyError(f"{path}: file truncated: header declares {vertex.count} vertices but only "
                       f"{max(available, 0)} lines of data follow")
    rows = lines[skip: skip + vertex.count]
    nprop = len(vertex.properties)
    try:
        table = np.loadtxt(rows, dtype=np.float64, ndmin=2, comments=None)
        ok = table.shape == (vertex.count, nprop)
    except ValueError:
        ok = False
    if not ok:
        first_line = header.header_lines + skip + 1
        raise PlyError(f"{path}: bad ASCII vertex data: {_ascii_problem(rows, nprop, first_line)}")
    return table


def _ascii_problem(rows: List[str], nprop: int, first_line: int) -> str:
    """Describe the first bad ASCII vertex row (only called once parsing has failed)."""
    for i, row in enumerate(rows):
        where = f"line {first_line + i}"
        words = row.split()
        if len(words) != nprop:
            return f"{where} has {len(words)} values, expected {nprop}"
        for w in words:
            try:
                float(w)
            except ValueError:
                return f"{where}: {w[:30]!r} is not a number"
    return "unparsable rows"


def read_ply(path, *, strict: bool = False, sh_degree: Optional[int] = None) -> GaussianSet:
    """Read a 3DGS PLY file into a :class:`GaussianSet`.

    ``strict``: raise instead of dropping rows that hold NaN/Inf. ``sh_degree``: keep only SH
    bands up to this degree (at most the file's degree). Quaternions are normalised (a zero one
    becomes the identity). ``meta`` gets ``source``, ``source_bytes``, ``format``,
    ``source_count``, ``dropped_rows``, ``zero_quats``, ``ignored_properties`` (vertex properties
    not used, e.g. normals), ``skipped_elements`` and ``file_sh_degree``.
    """
    p = Path(path)
    if not p.exists():
        raise PlyError(f"{path}: no such file")
    if not p.is_file():
        raise PlyError(f"{path}: not a regular file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            header = parse_header(f, path)
            vertex, before = _vertex_element(header, path)
            missing = [n for n in REQUIRED_PROPERTIES if vertex.property(n) is None]
            if missing:
                raise PlyError(f"{path}: vertex element lacks required 3DGS properties: {', '.join(missing)}")
            n_rest = _rest_count(vertex, path)
            file_degree = _REST_TO_DEGREE[n_rest]
            degree = _pick_degree(file_degree, sh_degree, path)
            if vertex.count == 0:
                raise PlyError(f"{path}: contains no Gaussians (the vertex element is empty)")
            if header.format == "ascii":
                src = _read_ascii(f, path, header, vertex, before)
            else:
                src = _read_binary(f, path, header, vertex, before, size)
    except OSError as e:
        raise PlyError(f"{path}: cannot read: {e.strerror or e}") from None
    arrays = _assemble(src, [q.name for q in vertex.properties], n_rest, degree)
    del src

    finite = np.ones(vertex.count, bool)
    for a in arrays.values():
        finite &= _finite_rows(a.reshape(vertex.count, -1))
    dropped = int(vertex.count - finite.sum())
    if dropped:
        if strict:
            raise PlyError(f"{path}: {dropped} of {vertex.count} rows hold NaN/Inf values "
                           f"(strict mode; without it they are dropped)")
        if dropped == vertex.count:
            raise PlyError(f"{path}: contains no usable Gaussians (all {dropped} rows hold NaN/Inf values)")
        arrays = {name: a[finite] for name, a in arrays.items()}
    reach = float(np.abs(arrays["means"]).max())
    if reach > MAX_COORD:
        raise PlyError(f"{path}: centre coordinates reach {reach:.3g}, beyond the ±{MAX_COORD:.0e} a float32 "
                       f"scene can use (is a property's type or the byte order in the header wrong?)")
    arrays["quats"], zero_quats = _unit_quats(arrays["quats"])
    return GaussianSet(**arrays, meta={
        "source": str(path),
        "source_bytes": size,
        "format": header.format,
        "source_count": vertex.count,
        "dropped_rows": dropped,
        "zero_quats": zero_quats,
        "ignored_properties": [q.name for q in vertex.properties if q.name not in REQUIRED_PROPERTIES
                               and not q.name.startswith("f_rest_")],
        "skipped_elements": [e.name for e in header.elements if e is not vertex],
        "file_sh_degree": file_degree,
    })


#: Quaternions whose norm is this close to 1 are already unit to float32 precision.
_UNIT_TOL = 1e-6


def _unit_quats(q: np.ndarray) -> Tuple[np.ndarray, int]:
    """Normalised quaternions (in place) and the number of zero ones (they become the identity).

    Only rows whose norm is off by more than :data:`_UNIT_TOL` are renormalised: dividing an
    already-unit float32 quaternion by its norm can flip last bits, and reading a file we wrote
    must give back exactly the arrays we wrote.
    """
    n2 = np.zeros(len(q), np.float64)
    for i in range(4):
        c = q[:, i].astype(np.float64)
        n2 += c * c
    off = ~(np.abs(n2 - 1.0) <= 2 * _UNIT_TOL)  # |n² - 1| ≈ 2 |n - 1|
    if off.any():
        q[off] = normalize_quats(q[off])
    return q, int((n2 <= 1e-24).sum())


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def _inria_names(degree: int) -> List[str]:
    n_rest = 3 * (SH_COEFFS[degree] - 1)
    return (MEANS + ["nx", "ny", "nz"] + DC + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity"] + SCALES + ROTS)


def _inria_table(gs: GaussianSet) -> np.ndarray:
    n, k = len(gs), gs.sh.shape[1]
    cols = [gs.means, np.zeros((n, 3), np.float32), gs.sh[:, 0],
            gs.sh[:, 1:].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),
            gs.opacities[:, None], gs.scales, gs.quats]
    return np.concatenate(cols, axis=1).astype("<f4", copy=False)


def write_ply(gs: GaussianSet, path) -> None:
    """Write ``gs`` as a standard INRIA 3DGS PLY (binary little-endian float32), atomically.

    The file appears complete or not at all: data goes to a temporary file in the same folder
    that then replaces ``path``. ``gs.features`` are not stored (PLY viewers do not know them).
    """
    p = Path(path)
    names = _inria_names(gs.sh_degree)
    header = "ply\nformat binary_little_endian 1.0\n"
    header += "comment written by sundae-compress\n"
    header += f"element vertex {len(gs)}\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    table = _inria_table(gs)
    with atomic_write(p) as f:
        f.write(header.encode("ascii"))
        f.write(memoryview(np.ascontiguousarray(table)).cast("B"))
