"""The output formats and their symmetric writer/reader pairs.

=================  ======================  ===============================================
format             file name ends with     what reads it
=================  ======================  ===============================================
``sundae``         ``.sundae``             this tool (bundle with the compensation net)
``ply``            ``.ply``                every 3DGS viewer and trainer (float32, largest)
``compressed-ply`` ``.compressed.ply``     PlayCanvas / SuperSplat, most web viewers
``spz``            ``.spz``                Niantic spz readers: three.js/Spark, Babylon, Unity, …
``sog``            ``.sog``                PlayCanvas engine / viewer, SuperSplat
=================  ======================  ===============================================

:func:`resolve_format` picks the format from ``--format`` or the file name; :func:`write_scene` and
:func:`read_scene` dispatch to the modules (``ply``, ``compressed_ply``, ``spz``, ``sog``). Writes
are atomic. The ``sundae`` bundle itself is written by :mod:`.bundle` (it also carries the net).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from ..errors import SundaeError
from ..gaussians import GaussianSet


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    viewers: str
    #: whether a compensation net can travel in it
    carries_net: bool = False


FORMATS: Dict[str, Format] = {f.name: f for f in [
    Format("sundae", ".sundae", "sundae-render / sundae-decompress", carries_net=True),
    Format("ply", ".ply", "any 3DGS viewer (float32 PLY)"),
    Format("compressed-ply", ".compressed.ply", "PlayCanvas, SuperSplat and most web viewers"),
    Format("spz", ".spz", "Niantic spz readers (three.js/Spark, Babylon.js, Unity, Unreal plug-ins)"),
    Format("sog", ".sog", "PlayCanvas engine and viewer, SuperSplat"),
]}
NAMES = list(FORMATS)


def format_of_path(path) -> Optional[str]:
    """The format a file name asks for (``x.compressed.ply`` before ``x.ply``), or None."""
    name = Path(path).name.lower()
    for f in sorted(FORMATS.values(), key=lambda f: -len(f.suffix)):
        if name.endswith(f.suffix):
            return f.name
    return None


def resolve_format(path=None, fmt: Optional[str] = None) -> str:
    """The output format: ``fmt`` when given (checked against the file name), else the one the
    file name's extension asks for, else ``sundae``."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise SundaeError(f"unknown format {fmt!r}; choose one of {', '.join(NAMES)}")
    by_name = format_of_path(path) if path is not None else None
    if fmt is not None and by_name is not None and by_name != fmt:
        raise SundaeError(f"{path} has the extension of {by_name!r} but --format is {fmt!r}; "
                          f"name the file *{FORMATS[fmt].suffix}")
    if fmt is not None:
        return fmt
    if path is not None and by_name is None and Path(path).suffix:
        raise SundaeError(f"{path}: cannot tell the output format from the extension "
                          f"{Path(path).suffix!r}; use one of {', '.join(f.suffix for f in FORMATS.values())} "
                          f"or --format")
    return by_name or "sundae"


def output_path(input_path, fmt: str) -> Path:
    """``scene.ply`` → ``scene<suffix>`` next to it."""
    p = Path(input_path)
    stem = p.name[: -len(".compressed.ply")] if p.name.lower().endswith(".compressed.ply") else p.stem
    return p.with_name(stem + FORMATS[fmt].suffix)


def _writers() -> Dict[str, Callable]:
    from .compressed_ply import write_compressed_ply
    from .ply import write_ply
    from .sog import write_sog
    from .spz import write_spz

    def ply(gs, path):
        write_ply(gs, path)
        return Path(path).stat().st_size

    return {"ply": ply, "compressed-ply": write_compressed_ply, "spz": write_spz, "sog": write_sog}


def write_scene(gs: GaussianSet, path, fmt: Optional[str] = None) -> int:
    """Write the Gaussians of ``gs`` (features dropped) in ``fmt`` (default: from ``path``),
    atomically; returns the bytes written. ``sundae`` bundles go through :func:`.bundle.write_bundle`."""
    fmt = resolve_format(path, fmt)
    if fmt == "sundae":
        from .bundle import write_bundle

        return write_bundle(path, gs).file_bytes
    return _writers()[fmt](gs.replace(features=None), path)


def is_compressed_ply_file(path) -> bool:
    from .compressed_ply import is_compressed_ply
    from .ply_header import parse_header

    try:
        with open(path, "rb") as f:
            return is_compressed_ply(parse_header(f, path))
    except (OSError, SundaeError):
        return False


def read_scene(path, **ply_options) -> GaussianSet:
    """Read any of the formats into a :class:`GaussianSet` (a ``.ply`` is sniffed for the
    compressed layout; ``ply_options`` go to :func:`.ply.read_ply`)."""
    fmt = format_of_path(path)
    if fmt in ("ply", "compressed-ply") and is_compressed_ply_file(path):
        from .compressed_ply import read_compressed_ply

        return read_compressed_ply(path)
    if fmt == "spz":
        from .spz import read_spz

        return read_spz(path)
    if fmt == "sog" or Path(path).name == "meta.json":
        from .sog import read_sog

        return read_sog(path)
    if fmt == "sundae":
        from .bundle import read_bundle

        return read_bundle(path).gaussians
    from .ply import read_ply

    return read_ply(path, **ply_options)
