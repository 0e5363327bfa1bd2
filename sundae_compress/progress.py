"""Progress reporting for long steps, on stderr.

``Progress(total, "scoring")`` used as a context manager; call ``update(n)`` and optionally
``set_postfix("psnr 31.2 dB")``. On a terminal it redraws one line; elsewhere (logs, CI) it prints
a line at most every ``log_every`` seconds. ``set_quiet(True)`` silences all of it.
"""

from __future__ import annotations

import os
import sys
import time

_QUIET = bool(os.environ.get("SUNDAE_QUIET"))


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def info(message: str) -> None:
    """A status line on stderr (suppressed by --quiet)."""
    if not _QUIET:
        print(message, file=sys.stderr, flush=True)


def _fmt_time(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{(s // 60) % 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "", log_every: float = 5.0, stream=None,
                 enabled: bool = True):
        self.enabled = enabled  # False: a silent stand-in, so callers need no second code path
        self.total = max(int(total), 0)
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.postfix = ""
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._last_n = None  # the count of the last line written (log mode)

    def __enter__(self):
        self._draw(force=True)
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self._draw(force=True, final=True)
        elif self.tty and self.enabled and not _QUIET:
            self.stream.write("\n")
        return False

    def update(self, n: int = 1) -> None:
        self.n += n
        self._draw()

    def set_postfix(self, text: str) -> None:
        self.postfix = text

    def line(self) -> str:
        el = time.perf_counter() - self.t0
        if self.total:
            frac = min(self.n / self.total, 1.0)
            eta = el / frac * (1 - frac) if frac > 0 else 0.0
            s = f"{self.desc}: {100 * frac:5.1f}% {self.n}/{self.total}{self.unit} [{_fmt_time(el)}<{_fmt_time(eta)}]"
        else:
            s = f"{self.desc}: {self.n}{self.unit} [{_fmt_time(el)}]"
        return s + (f" {self.postfix}" if self.postfix else "")

    def _draw(self, force=False, final=False):
        if _QUIET or not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if force or now - self._last > 0.1:
                self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
                self.stream.flush()
                self._last = now
        elif (force or now - self._last >= self.log_every) and not (final and self.n == self._last_n):
            self.stream.write(self.line() + "\n")  # (the closing line only if it says something new)
            self.stream.flush()
            self._last = now
            self._last_n = self.n
