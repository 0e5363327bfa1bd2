"""Searching the budget for a quality or size target (``--target-psnr``, ``--target-size``).

The search knows nothing about scenes: it is given the pipeline as callables and a scene size
``n`` (valid Gaussians), so ``--lod-psnr`` or a benchmark can reuse it:

``probe(count, quality) -> float``
    novel-view PSNR of the scene pruned to ``count`` and put through the codec preset ``quality``
    (no fine-tuning): cheap, called many times (the pipeline caches the teacher renders).
``size(count, quality) -> int``
    bytes of the bundle of that pruned scene (no rendering): cheaper still.
``build(count, quality, limit) -> Built``
    the real pipeline (prune, fine-tune when enabled, encode) at that budget, its bundle decoded
    and scored on the novel views; with ``limit`` it never returns a bundle larger than ``limit``
    bytes (the pipeline drops Gaussians after fine-tuning when needed).

PSNR grows about linearly with log(count) (~2.5–3 dB per doubling on the shared scenes), so
counts are searched on a log scale by safeguarded interpolation (a few probes, not a bisection
to the last Gaussian). Fine-tuning adds a gain over the prune-only curve that shrinks as the
budget grows: the first build sits where prune-only PSNR is :data:`PRIOR_GAIN` below the target;
the gain measured there moves the next build, and with two measurements the gain is interpolated
in log(count). At most :data:`MAX_BUILDS` full builds."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import SundaeError

#: dB of fine-tuning gain assumed before any is measured (measured: +3.9 to +5.2 dB at 10 % on the
#: shared scenes; assuming less puts the first build above the target, a safe fallback)
PRIOR_GAIN = 3.0
#: a fine-tuned build aims this far above the target (the window is [target, target + WINDOW])
AIM = 0.4
WINDOW = 1.0
#: a trimmed fine-tuned build (see :func:`search_psnr`'s ``trim``) aims this far above the target
TRIM_AIM = 0.1
#: full builds (prune + fine-tune + encode + evaluate) a fine-tuned search may spend
MAX_BUILDS = 3
#: relative count precision of a prune-only search (2 % of the count is ~0.1 dB)
COUNT_TOL = 0.02
#: a prune-only search stops once a passing count is this close above the level (dB)
LEVEL_TOL = 0.1
#: probes one count search may spend before it settles for its bracket
MAX_PROBES = 12
#: the first fine-tuned build keeps at least 1/this of the prune-only count that reaches the target
#: (2.3 doublings; at the assumed slope and prior gain it sits 1.2 doublings below, so this only
#: bites where the prune-only curve is flat)
MAX_FIRST_SHRINK = 5
#: dB per doubling of the count assumed before two probes give a slope
PRIOR_SLOPE = 2.5
#: bytes a size search keeps free for the header fields written after measuring (achieved PSNR)
HEADER_SLACK = 64
#: codec presets a search may choose from, smallest first (``--quality`` fixes one)
PRESETS = ("low", "medium", "high", "max")

#: units ``--target-size`` accepts: decimal (KB = 1000 bytes) and binary (KiB = 1024 bytes)
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
              "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3}


def parse_size(text) -> int:
    """``200KB`` → 200000, ``1.5MB`` → 1500000, ``64KiB`` → 65536, ``12345`` → 12345 (KB, MB, GB
    are powers of 1000; KiB, MiB, GiB of 1024). Raises :class:`SundaeError` for anything else."""
    if isinstance(text, bool):
        raise SundaeError(f"--target-size must be a size like 200KB, 1.5MB or 250000, got {text!r}")
    if isinstance(text, int):
        value = float(text)
        unit = ""
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in SIZE_UNITS:
            raise SundaeError(f"--target-size must be a size like 200KB, 1.5MB or 250000 "
                              f"(KB = 1000 bytes, KiB = 1024), got {text!r}")
        value, unit = float(m.group(1)), m.group(2).lower()
    nbytes = int(math.floor(value * SIZE_UNITS[unit]))
    if nbytes < 1:
        raise SundaeError(f"--target-size must be at least 1 byte, got {text!r}")
    return nbytes


def check_target_psnr(db) -> float:
    try:
        v = float(db)
    except (TypeError, ValueError):
        raise SundaeError(f"--target-psnr must be a number of dB, got {db!r}") from None
    if not (0.0 < v < 100.0):  # also rejects NaN; the metric tops out at 100 dB (identical images)
        raise SundaeError(f"--target-psnr must be between 0 and 100 dB, got {db!r}")
    return v


@dataclass
class Built:
    """One full build: what the pipeline made at a budget and what it measured."""
    count: int
    quality: str
    psnr: float          # novel-view PSNR of the decoded bundle vs the original
    bytes: int
    finetuned: bool = False
    payload: Any = None  # whatever the pipeline needs to write it (Gaussians, net, measurements)


@dataclass
class Outcome:
    """The chosen build and how the search got there."""
    kind: str                    # "psnr" or "size"
    target: float                # dB or bytes
    reached: bool
    built: Built
    trials: List[Dict[str, Any]] = field(default_factory=list)
    builds: int = 0
    note: str = ""
    #: fine-tuning gains measured by this search, (count, dB over prune-only): a prior for the next
    gains: List[Tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "reached": self.reached,
                "count": self.built.count, "quality": self.built.quality,
                "psnr": round(self.built.psnr, 2), "bytes": self.built.bytes,
                "finetuned": self.built.finetuned, "builds": self.builds, "probes": len(self.trials),
                "note": self.note}


class Recorder:
    """Wraps the probe / size callables: memoises them and keeps a log of the trials."""

    def __init__(self, probe, size, notify=None):
        self._probe, self._size = probe, size
        self.psnr: Dict[Tuple[int, str], float] = {}
        self.bytes: Dict[Tuple[int, str], int] = {}
        self.trials: List[Dict[str, Any]] = []
        self.say = notify or (lambda _m: None)

    def probe(self, count: int, quality: str) -> float:
        key = (int(count), quality)
        if key not in self.psnr:
            self.psnr[key] = float(self._probe(*key))
            self.trials.append({"count": key[0], "quality": quality, "psnr": round(self.psnr[key], 3)})
            self.say(f"probe: {key[0]:,} Gaussians, {quality} codec, no fine-tuning -> {self.psnr[key]:.2f} dB novel")
        return self.psnr[key]

    def size(self, count: int, quality: str) -> int:
        key = (int(count), quality)
        if key not in self.bytes:
            self.bytes[key] = int(self._size(*key))
        return self.bytes[key]


def _interp(lo: int, hi: int, f_lo: Optional[float], f_hi: Optional[float], level: float) -> int:
    """Next count inside (lo, hi): interpolation on log(count), kept 15–85 % into the interval."""
    a, b = math.log(max(lo, 1)), math.log(hi)
    t = 0.5
    if f_lo is not None and f_hi is not None and f_hi > f_lo:
        t = min(0.85, max(0.15, (level - f_lo) / (f_hi - f_lo)))
    c = int(round(math.exp(a + t * (b - a))))
    return min(hi - 1, max(lo + 1, c))


def count_for_level(rec: Recorder, level: float, n: int, quality: str, guess: Optional[int] = None,
                    tol: float = COUNT_TOL) -> Optional[int]:
    """The smallest count (to ``tol``) whose prune-only PSNR reaches ``level``; None when even all
    ``n`` Gaussians do not."""
    known = sorted((c, p) for (c, q), p in rec.psnr.items() if q == quality)
    passing = [c for c, p in known if p >= level]
    failing = [c for c, p in known if p < level]
    hi = min(passing) if passing else None
    lo = max((c for c in failing if hi is None or c < hi), default=None)
    probes = 0
    if hi is None and lo is None:
        c = min(n, max(1, int(guess or round(0.1 * n))))
        probes += 1
        if rec.probe(c, quality) >= level:
            hi = c
        else:
            lo = c
    # walk outwards with the assumed slope until the level is bracketed
    while hi is None or lo is None:
        if probes >= MAX_PROBES:
            break
        if hi is None:
            if lo >= n:
                return None
            f = rec.probe(lo, quality)
            step = max(0.25, (level - f) / PRIOR_SLOPE + 0.15)  # doublings
            c = min(n, max(lo + 1, int(math.ceil(lo * 2 ** step))))
        else:
            if hi <= 1:
                return 1
            f = rec.probe(hi, quality)
            step = max(0.25, (f - level) / PRIOR_SLOPE + 0.15)
            c = max(1, min(hi - 1, int(math.floor(hi / 2 ** step))))
        probes += 1
        if rec.probe(c, quality) >= level:
            hi = c
        else:
            lo = c
    if hi is None:
        return None
    if lo is None:
        return hi
    while (hi - lo > 1 and hi > lo * (1 + tol) and probes < MAX_PROBES
           and rec.psnr.get((hi, quality), level) - level > LEVEL_TOL):
        c = _interp(lo, hi, rec.psnr.get((lo, quality)), rec.psnr.get((hi, quality)), level)
        probes += 1
        if rec.probe(c, quality) >= level:
            hi = c
        else:
            lo = c
    return hi


def count_for_bytes(rec: Recorder, limit: int, n: int, quality: str) -> int:
    """The largest count whose prune-only bundle at ``quality`` fits in ``limit`` bytes (0 when not
    even one Gaussian fits). Bytes grow about linearly with the count: secant steps, then bisection."""
    if rec.size(1, quality) > limit:
        return 0
    if rec.size(n, quality) <= limit:
        return n
    lo, hi = 1, n
    b_lo, b_hi = rec.size(lo, quality), rec.size(hi, quality)
    for _ in range(40):
        if hi - lo <= max(1, int(lo * 0.002)):
            break
        t = (limit - b_lo) / max(b_hi - b_lo, 1)
        c = int(lo + t * (hi - lo))
        c = min(hi - 1, max(lo + 1, c))
        if hi - lo > 8:  # keep the secant from crawling at one end
            c = min(hi - (hi - lo) // 8, max(lo + (hi - lo) // 8, c)) if hi - lo > 64 else c
        b = rec.size(c, quality)
        if b <= limit:
            lo, b_lo = c, b
        else:
            hi, b_hi = c, b
    return lo


def _gain_at(count: int, gains: Sequence[Tuple[int, float]]) -> float:
    """Fine-tuning gain at ``count``: the measured one, or linear in log(count) between two
    measurements (held flat outside them)."""
    pts = sorted(gains)
    if len(pts) == 1:
        return pts[0][1]
    x = math.log(count)
    if x <= math.log(pts[0][0]):
        return pts[0][1]
    if x >= math.log(pts[-1][0]):
        return pts[-1][1]
    for (c0, g0), (c1, g1) in zip(pts, pts[1:]):
        if math.log(c0) <= x <= math.log(c1):
            t = (x - math.log(c0)) / max(math.log(c1) - math.log(c0), 1e-12)
            return g0 + t * (g1 - g0)
    return pts[-1][1]


def search_psnr(target: float, n: int, probe: Callable, size: Callable, build: Callable, *,
                finetune: bool, qualities: Sequence[str] = PRESETS, notify=None,
                max_builds: int = MAX_BUILDS, prior_gains: Sequence[Tuple[int, float]] = (),
                trim: Optional[Callable] = None) -> Outcome:
    """The smallest bundle whose novel-view PSNR reaches ``target`` (see the module docstring).
    ``outcome.reached`` is False when not even all ``n`` Gaussians at the best preset reach it;
    ``outcome.built`` is then the best build found. ``prior_gains``: fine-tuning gains measured
    on the same scene by an earlier search (``outcome.gains``; a ladder's coarser level) replace
    :data:`PRIOR_GAIN` for the first build and join the gain model. ``trim(built, level)``: when the
    smallest passing fine-tuned build still overshoots the window, fewer of its Gaussians (pruned,
    not fine-tuned again) reaching ``level`` (None if none): no extra fine-tuning spent."""
    rec = Recorder(probe, size, notify)
    say = rec.say
    guess = None
    model: List[Tuple[int, float]] = list(prior_gains)
    if not finetune:
        level0 = target
    elif model:
        level0 = target + AIM - _gain_at(max(1, n // 10), model)
    else:
        level0 = target - PRIOR_GAIN
    # the preset: the one whose prune-only count for the (first) level gives the fewest bytes;
    # presets are tried from the smallest up while the next one keeps winning
    options = []
    for q in qualities:
        c = count_for_level(rec, level0, n, q, guess=guess)
        if c is None:
            continue
        guess = c
        options.append((rec.size(c, q), c, q))
        if len(options) >= 2 and options[-1][0] > options[-2][0]:
            break
    if not options:  # not even every Gaussian at the best preset reaches the (first) level
        best_q = max(qualities, key=lambda q: rec.probe(n, q))
        b = build(n, best_q, None)
        return Outcome("psnr", target, b.psnr >= target, b, rec.trials, 1)
    nbytes, c, q = min(options)
    if not finetune:
        b = build(c, q, None)
        return Outcome("psnr", target, b.psnr >= target, b, rec.trials, 1)
    # where the prune-only curve is flatter than assumed (the last few Gaussians of a scene in front
    # of its background), ``level0`` lands far below the target's own count, at budgets whose
    # fine-tuning gain says nothing about the target's (guitar, 30 dB: 15 Gaussians, gain -0.6 dB)
    at_target = count_for_level(rec, target, n, q, guess=c)
    if at_target is not None:
        c = max(c, min(n, int(math.ceil(at_target / MAX_FIRST_SHRINK))))

    builds: List[Built] = []
    gains: List[Tuple[int, float]] = []
    for _ in range(max_builds):
        b = build(c, q, None)
        builds.append(b)
        if b.finetuned:
            gains.append((c, b.psnr - rec.probe(c, q)))
            model.append(gains[-1])
        say(f"build: {c:,} Gaussians, {q} codec{', fine-tuned' if b.finetuned else ''} -> "
            f"{b.psnr:.2f} dB novel, {b.bytes:,} bytes")
        if target <= b.psnr <= target + WINDOW:
            break
        if b.psnr < target and c >= n:
            break
        passing = [x.count for x in builds if x.psnr >= target]
        failing = [x.count for x in builds if x.psnr < target]
        hi = min(passing) if passing else n + 1
        lo = max((x for x in failing if x < hi), default=0)
        if not model:  # a build without fine-tuning (all Gaussians): nothing to model
            break
        nxt = c
        for _ in range(3):  # fixed point of: prune-only level = target + AIM - gain(count)
            level = target + AIM - _gain_at(nxt, model)
            found = count_for_level(rec, level, n, q, guess=nxt)
            nxt = n if found is None else found
        nxt = min(hi - 1, max(lo + 1, nxt), n)
        if hi <= n and (hi - lo <= 1 or hi <= lo * (1 + COUNT_TOL)):
            break  # the smallest passing build is as small as the bracket allows
        if nxt == c or any(x.count == nxt for x in builds):
            break
        c = nxt
    ok = [x for x in builds if x.psnr >= target]
    chosen = min(ok, key=lambda x: x.bytes) if ok else max(builds, key=lambda x: x.psnr)
    if trim is not None and ok and chosen.psnr > target + WINDOW:
        smaller = trim(chosen, target + TRIM_AIM)
        if smaller is not None and target <= smaller.psnr < chosen.psnr and smaller.bytes < chosen.bytes:
            say(f"trimmed: {smaller.count:,} Gaussians -> {smaller.psnr:.2f} dB novel, {smaller.bytes:,} bytes")
            chosen = smaller
    return Outcome("psnr", target, bool(ok), chosen, rec.trials, len(builds), gains=gains)


def search_size(limit: int, n: int, probe: Callable, size: Callable, build: Callable, *,
                qualities: Sequence[str] = PRESETS, notify=None) -> Outcome:
    """The best novel-view PSNR whose bundle fits in ``limit`` bytes: per preset, the largest count
    that fits (by encoding, no rendering); then the prune-only PSNR of each decides the preset;
    the chosen budget is built (``build`` keeps it within ``limit``). Raises :class:`SundaeError`
    when not even one Gaussian fits."""
    rec = Recorder(probe, size, notify)
    budget = limit - HEADER_SLACK
    fits = []
    for q in qualities:
        c = count_for_bytes(rec, budget, n, q)
        if c > 0:
            fits.append((c, q))
    if not fits:
        smallest = min(rec.size(1, q) for q in qualities)
        raise SundaeError(f"--target-size {limit:,} bytes is too small: the smallest possible bundle "
                          f"(1 Gaussian) takes {smallest:,} bytes")
    scored = [(rec.probe(c, q), -rec.size(c, q), c, q) for c, q in fits]
    _, _, c, q = max(scored)
    b = build(c, q, limit)
    rec.say(f"build: {b.count:,} Gaussians, {q} codec{', fine-tuned' if b.finetuned else ''} -> "
            f"{b.psnr:.2f} dB novel, {b.bytes:,} bytes (limit {limit:,})")
    return Outcome("size", limit, b.bytes <= limit, b, rec.trials, 1)
