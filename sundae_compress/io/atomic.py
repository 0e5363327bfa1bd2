"""The one way every output file is written: atomically, with the user's normal permissions.

:func:`atomic_write` writes into a temporary file in the destination folder (``.NAME.<random>.tmp``)
and renames it over ``path`` only once it is complete, so a reader (or a crash) sees the old file
or the whole new one, never half of it. The file gets ``0o666`` minus the process umask -- the
permissions any other program's output gets (``-rw-r--r--`` with the usual umask 022) -- not the
owner-only ``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from ..errors import SundaeError

#: Suffix of the temporary files; one left behind means the writing process was killed.
TEMP_SUFFIX = ".tmp"


def temp_glob(name_glob: str) -> str:
    """Glob matching the temporary files of outputs named ``name_glob`` (e.g. ``*.sundae``)."""
    return f".{name_glob}.*{TEMP_SUFFIX}"


@contextmanager
def atomic_write(path: Union[str, Path], *, fsync: bool = False) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f: f.write(...)``; ``path`` appears complete or not at all.

    Any :class:`OSError` becomes one :class:`SundaeError` line naming ``path``; the temporary file
    is removed on every failure (exceptions inside the block included)."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise SundaeError(f"cannot write {p}: folder {folder} does not exist")
    tmp = folder / f".{p.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    done = False
    try:
        fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, p)
        done = True
    except OSError as e:
        raise SundaeError(f"cannot write {p}: {e.strerror or e}") from None
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_bytes_atomic(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)
