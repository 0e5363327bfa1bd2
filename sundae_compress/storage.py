"""Where scenes and bundles live: a local path, or an fsspec URL (``memory://``, ``s3://``, ``gs://``…).

A *location* is a :class:`~pathlib.Path` for the local filesystem (``file://`` URLs become one) and
a URL string for anything else; :func:`normalize` picks. Every function here takes either, so the
batch code reads the same for both. Local paths keep the plain ``os``/``pathlib`` behaviour.

Remote scenes are worked on through local copies (:func:`local_copy`, :func:`publish`): the
pipeline reads and writes ordinary files, and a bundle reaches its remote destination by an upload
to a temporary name next to it (the same pattern as :data:`~sundae_compress.io.bundle.TEMP_GLOB`)
followed by a move, so readers never see a half-uploaded bundle (object stores publish an object
whole in any case).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, List, Tuple, Union

from .errors import SundaeError

Location = Union[Path, str]


def is_url(loc) -> bool:
    """True for a non-local URL (``memory://…``, ``s3://…``); local paths and ``file://`` are not."""
    return isinstance(loc, str) and "://" in loc and not loc.startswith("file://")


def normalize(loc) -> Location:
    """A local path (or ``file://`` URL) → :class:`Path`; another URL → the URL without a trailing slash."""
    if isinstance(loc, Path):
        return loc
    s = os.fspath(loc)
    if s.startswith("file://"):
        return Path(s[len("file://"):] or "/")
    if is_url(s):
        fs, path = _fs(s)
        return fs.unstrip_protocol(path.rstrip("/") or "/")
    return Path(s)


def _fs(url: str):
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec comes with torch
        raise SundaeError(f"{url}: URLs need fsspec (pip install fsspec)") from None
    try:
        return url_to_fs(url)
    except ImportError as e:  # e.g. s3:// without s3fs
        raise SundaeError(f"{url}: {e}".split("\n")[0]) from None
    except ValueError as e:  # unknown protocol
        raise SundaeError(f"{url}: {e}".split("\n")[0]) from None


def _url(fs, path: str) -> str:
    return fs.unstrip_protocol(path)


def join(base: Location, *parts: str) -> Location:
    """``base / parts`` for either kind of location (parts use ``/``)."""
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return posixpath.join(base, *parts)


def name(loc: Location) -> str:
    return loc.name if isinstance(loc, Path) else posixpath.basename(loc.rstrip("/"))


def parent(loc: Location) -> Location:
    return loc.parent if isinstance(loc, Path) else posixpath.dirname(loc.rstrip("/"))


def absolute(loc: Location) -> Location:
    """A local path made absolute (workers on other machines have another cwd); a URL as is."""
    return loc.resolve() if isinstance(loc, Path) else loc


def _ask(loc: Location, local: str, remote: str) -> bool:
    if isinstance(loc, Path):
        return getattr(loc, local)()
    fs, p = _fs(loc)
    return getattr(fs, remote)(p)


def isdir(loc: Location) -> bool:
    return _ask(loc, "is_dir", "isdir")


def isfile(loc: Location) -> bool:
    return _ask(loc, "is_file", "isfile")


def exists(loc: Location) -> bool:
    return _ask(loc, "exists", "exists")


def size(loc: Location) -> int:
    """Bytes of a file (raises OSError when it is missing)."""
    if isinstance(loc, Path):
        return loc.stat().st_size
    fs, p = _fs(loc)
    try:
        return int(fs.size(p))
    except OSError:
        raise
    except Exception as e:  # a backend's own error type
        raise OSError(str(e)) from None


def makedirs(loc: Location) -> None:
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)
    else:
        fs, p = _fs(loc)
        fs.makedirs(p, exist_ok=True)


def inside(loc: Location, root: Location) -> bool:
    """True when ``loc`` is ``root`` or below it (same kind of location)."""
    if isinstance(loc, Path) != isinstance(root, Path):
        return False
    if isinstance(loc, Path):
        a, b = loc.resolve(), root.resolve()
        return a == b or b in a.parents
    a, b = loc.rstrip("/"), root.rstrip("/")
    return a == b or a.startswith(b + "/")


def relative(loc: Location, root: Location) -> str:
    """``loc`` relative to ``root`` with ``/`` separators ('' for the root itself)."""
    if isinstance(loc, Path):
        rel = loc.relative_to(root).as_posix()
        return "" if rel == "." else rel
    a, b = loc.rstrip("/"), root.rstrip("/")
    return "" if a == b else a[len(b) + 1:]


def walk(root: Location) -> Iterator[Tuple[Location, List[str], List[str]]]:
    """``os.walk`` for either kind: (folder, sub-folder names, file names); prune the names in place."""
    if isinstance(root, Path):
        for d, dirnames, filenames in os.walk(root):
            yield Path(d), dirnames, filenames
        return
    fs, p = _fs(root)
    for d, dirnames, filenames in fs.walk(p):
        yield _url(fs, d), dirnames, filenames


def listdir(loc: Location) -> List[str]:
    if isinstance(loc, Path):
        return [c.name for c in loc.iterdir()]
    fs, p = _fs(loc)
    return [posixpath.basename(c.rstrip("/")) for c in fs.ls(p, detail=False)]


def remove_matching(root: Location, pattern: str, names=None, recursive: bool = True) -> int:
    """Delete files below ``root`` (directly in it unless ``recursive``) whose name matches
    ``pattern`` (and, given ``names``, starts with ``.NAME.`` for one of them); returns how many went."""
    n = 0
    if isinstance(root, Path):
        if not root.is_dir():
            return 0
        found = list(root.rglob(pattern) if recursive else root.glob(pattern))
        rm = os.unlink
    else:
        fs, p = _fs(root)
        if not fs.isdir(p):
            return 0
        found = [f for f in (fs.find(p) if recursive else fs.ls(p, detail=False))
                 if fnmatch.fnmatch(posixpath.basename(f), pattern)]
        rm = fs.rm_file
    for f in found:
        base = f.name if isinstance(f, Path) else posixpath.basename(f)
        if names is not None and not any(base.startswith(f".{nm}.") for nm in names):
            continue
        try:
            rm(f)
            n += 1
        except OSError:
            pass
    return n


def write_text_atomic(loc: Location, text: str) -> None:
    """Replace ``loc`` with ``text`` so that a reader sees the old or the new content, never half."""
    data = text.encode()
    if isinstance(loc, Path):
        from .io.atomic import write_bytes_atomic

        write_bytes_atomic(loc, data)
        return
    fs, p = _fs(loc)
    tmp = _temp_name(p)
    fs.pipe_file(tmp, data)
    fs.mv(tmp, p)


def _temp_name(path: str) -> str:
    """``.NAME.<random>.tmp`` next to ``path``: the pattern of :mod:`sundae_compress.io.atomic`."""
    return posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def local_copy(loc: Location, workdir: Path) -> Iterator[Path]:
    """A local file with ``loc``'s content and file name: ``loc`` itself when local, else a
    download into ``workdir`` (the name matters: a bundle records its source's file name)."""
    if isinstance(loc, Path):
        yield loc
        return
    fs, p = _fs(loc)
    dst = Path(workdir) / uuid.uuid4().hex[:8] / posixpath.basename(p)
    dst.parent.mkdir(parents=True)
    try:
        fs.get_file(p, str(dst))
    except FileNotFoundError:
        raise SundaeError(f"{loc}: no such file") from None
    try:
        yield dst
    finally:
        shutil.rmtree(dst.parent, ignore_errors=True)


@contextlib.contextmanager
def local_file(loc: Location) -> Iterator[Path]:
    """:func:`local_copy` in a scratch folder of its own (removed afterwards)."""
    if isinstance(loc, Path):
        yield loc
        return
    work = temp_dir()
    try:
        with local_copy(loc, work) as p:
            yield p
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish(local: Path, dest: Location) -> None:
    """Put the finished local file ``local`` at ``dest`` atomically (a temporary name, then a move)."""
    if isinstance(dest, Path):
        if Path(local) != dest:
            from .io.atomic import atomic_write

            with atomic_write(dest) as f, open(local, "rb") as src:
                shutil.copyfileobj(src, f)
        return
    fs, p = _fs(dest)
    tmp = _temp_name(p)
    try:
        fs.makedirs(posixpath.dirname(p), exist_ok=True)
        fs.put_file(str(local), tmp)
        fs.mv(tmp, p)
    except Exception:
        try:
            fs.rm_file(tmp)
        except Exception:
            pass
        raise


def temp_dir() -> Path:
    """A fresh local scratch folder (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix="sundae-"))
