"""The ctypes loader shared by the package's C extensions (``prune/native.py``, ``render/native.py``).

``setup.py`` compiles each one into an extension module (``prune._kernel``, ``render._raster``).
:meth:`NativeLibrary.load` imports it once per process, which proves it was built for this
interpreter, opens the same file with :mod:`ctypes` and declares every exported function's
``restype`` / ``argtypes``; if any of that fails it keeps the reason (:attr:`NativeLibrary.error`)
and returns ``None``. :meth:`NativeLibrary.get` is what callers ask: the library, or ``None`` when
their fallback must run, with a warning (once per process) when the extension is missing.
:meth:`NativeLibrary.use` switches the library off or insists on it (tests, benchmarks).
"""

from __future__ import annotations

import ctypes
import importlib
import threading
import warnings
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple, Type

#: name: (restype, argtypes) of every function a library exports
Signatures = Dict[str, Tuple[object, List[object]]]


class NativeLibrary:
    """One C extension opened with ctypes.

    ``module``: the extension's dotted name; ``signatures``: its functions; ``what`` names it in
    messages ("native kernel"); ``fallback`` says what runs without it and what that costs ("the
    torch compositor, several times slower on CPU"); ``category``: the warning class of a missing
    build."""

    def __init__(self, module: str, signatures: Signatures, *, what: str, fallback: str,
                 category: Type[Warning]):
        self.module = module
        self.signatures = dict(signatures)
        self.what = what
        self.fallback = fallback
        self.category = category
        #: why loading failed ("ImportError: ..."), empty when it did not (or was not tried yet)
        self.error = ""
        #: None: native if built; False: the fallback; True: native (must exist). Set by :meth:`use`.
        self.forced: Optional[bool] = None
        self._lock = threading.Lock()
        self._lib: Optional[ctypes.CDLL] = None
        self._tried = False

    def load(self) -> Optional[ctypes.CDLL]:
        """The library (loaded on the first call, thread-safe), or None when it is not built."""
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    ext = importlib.import_module(self.module)  # built for this interpreter?
                    cdll = ctypes.CDLL(ext.__file__)
                    for name, (res, args) in self.signatures.items():
                        f = getattr(cdll, name)
                        f.restype, f.argtypes = res, args
                    self._lib = cdll
                except (ImportError, OSError, AttributeError) as e:
                    self.error = f"{type(e).__name__}: {e}"
        return self._lib

    def available(self) -> bool:
        """Whether the library is built and loadable (regardless of :meth:`use`)."""
        return self.load() is not None

    def get(self, stacklevel: int = 1) -> Optional[ctypes.CDLL]:
        """The library, or None when the caller's fallback must run: switched off by ``use(False)``,
        or not built (a ``category`` warning, once per process). Under ``use(True)`` a missing
        build raises RuntimeError. ``stacklevel`` counts as :func:`warnings.warn` would in the caller
        of this method."""
        if self.forced is False:
            return None
        out = self.load()
        if out is None:
            if self.forced:
                raise RuntimeError(f"the {self.what} is not built ({self.error}); run `pip install -e .`")
            warnings.warn(f"sundae-compress: {self.what} not built ({self.error}); using {self.fallback}. "
                          "Run `pip install -e .` to build it.", self.category, stacklevel=stacklevel + 1)
            warnings.filterwarnings("ignore", category=self.category)  # once per process
        return out

    @contextmanager
    def use(self, native: bool):
        """Run the enclosed code with (``True``) or without (``False``) the library. ``True``
        raises (in :meth:`get`) if it is not built."""
        old = self.forced
        self.forced = bool(native)
        try:
            yield
        finally:
            self.forced = old
