"""Seeded mutation fuzzing of the whole no-fine-tune pipeline: read → prune (+ merge) → encode.

Shared by ``tests/test_pipeline_fuzz.py`` (a few hundred cases) and
``benchmarks/bench_fuzz_pipeline.py`` (≥ 1,000). The reader fuzzing of ``tests/fuzzing.py`` stops
at ``read_ply``; here every mutated PLY that reads goes on through
:func:`sundae_compress.api.compress` with ``finetune=False``, so the values a mutation leaves
(garbage but finite floats after a changed property type or byte order, huge extents, coincident
or flat clouds) reach the neighbour search, the merge and the codec.

Seeds: the reader-fuzz seeds (8-40 random Gaussians in several layouts) plus real-data seeds (a
2,000-Gaussian piece of donut, a 1,500-Gaussian piece of playbot with SH degree 2, when
``../shared/assets`` is there) and value-level seeds that are valid PLYs of awkward clouds: all
centres coincident, half of them coincident, flat, collinear, a huge (1e7) extent, a tiny (1e-30)
one. Mutations: the reader fuzzer's byte-level and PLY-aware mutators (one to three per case).
Each case compresses with a ratio and merge mode drawn from the case's generator.

Outcomes (:func:`run_pipeline_case`): ``ok``; ``error`` (a one-line SundaeError, allowed);
``crash`` (any other exception: the command line would print "internal error"); ``warning`` (a
warning escaped to the user, e.g. a numpy overflow warning); ``hang`` (over the CPU-time limit,
SIGPROF, or the wall-time backstop, SIGALRM: the reader fuzzer's :func:`fuzzing.run_case`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import fuzzing
from sundae_compress.errors import SundaeError
from sundae_compress.gaussians import GaussianSet, normalize_quats

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
OUTCOMES = ("ok", "error", "crash", "warning", "hang", "memory")
ACCEPTED = ("ok", "error")
RATIOS = (0.05, 0.2, 0.5, 0.9)
MERGES = ("auto", "collapse", "assign", "none")


def _awkward(n: int, seed: int, kind: str) -> GaussianSet:
    gs = fuzzing.random_scene(n, seed, 0)
    m = gs.means.astype(np.float64)
    if kind == "coincident":
        m[:] = 0.25
    elif kind == "half_coincident":
        m[: n // 2] = m[0]
    elif kind == "flat":
        m[:, 2] = 0.0
    elif kind == "collinear":
        m[:, 1:] = 0.0
    elif kind == "huge":
        m *= 1e7
    elif kind == "tiny":
        m *= 1e-30
    return GaussianSet(means=m, quats=gs.quats, scales=gs.scales, opacities=gs.opacities, sh=gs.sh)


def _real(name: str, n: int, seed: int) -> Optional[GaussianSet]:
    p = ASSETS / name
    if not p.is_file():
        return None
    from sundae_compress.io.ply import read_ply

    gs = read_ply(p)
    idx = np.sort(np.random.default_rng(seed).choice(len(gs), n, replace=False))
    return gs.subset(idx)


def pipeline_seeds() -> List[Tuple[str, bytes]]:
    seeds = list(fuzzing.ply_seeds())
    for kind in ("coincident", "half_coincident", "flat", "collinear", "huge", "tiny"):
        seeds.append((kind, fuzzing._ply_bytes(_awkward(300, 7, kind))))
    for name, n in (("donut.ply", 2000), ("playbot_125k.ply", 1500)):
        gs = _real(name, n, 0)
        if gs is not None:
            gs = GaussianSet(means=gs.means, quats=normalize_quats(gs.quats), scales=gs.scales,
                             opacities=gs.opacities, sh=gs.sh)
            seeds.append((name.split(".")[0], fuzzing._ply_bytes(gs)))
    return seeds


class LeakedWarning(Exception):
    """A warning reached the user (raised after the run so that the case counts as a failure)."""


def _compress_checked(path: Path, out: Path, ratio: float, merge: str) -> None:
    from sundae_compress.api import compress

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compress(path, out, ratio=ratio, merge=merge, finetune=False, overwrite=True)
    if caught:
        w = caught[0]
        raise LeakedWarning(f"{w.category.__name__} at {Path(w.filename).name}:{w.lineno}: {w.message}")


def run_pipeline_case(path: Path, out: Path, *, ratio: float, merge: str,
                      time_limit: float = 20.0) -> Tuple[str, str, float]:
    """Compress ``path`` into ``out`` without fine-tuning under the reader fuzzer's time limits
    (:func:`fuzzing.run_case`, memory not traced); ``(outcome, message, cpu_seconds)``."""
    r = fuzzing.run_case("ply", path, time_limit=time_limit, trace_memory=False,
                         reader=lambda p: _compress_checked(p, out, ratio, merge))
    outcome = "warning" if r.outcome == "crash" and r.message.startswith("LeakedWarning") else r.outcome
    return outcome, r.message, r.seconds


def fuzz_pipeline(count: int, seed: int, workdir: Path, *, time_limit: float = 20.0,
                  on_result: Optional[Callable] = None) -> Dict:
    """``count`` mutated PLYs through the pipeline; a summary with counts, the slowest case and
    every failure (replay: the case ``index`` of ``fuzzing.generate_cases("ply", ..., seed,
    pipeline_seeds())`` with the listed ratio / merge)."""
    from sundae_compress import progress

    was_quiet = progress.is_quiet()
    progress.set_quiet(True)
    try:
        return _fuzz_pipeline(count, seed, workdir, time_limit, on_result)
    finally:
        progress.set_quiet(was_quiet)


def _fuzz_pipeline(count, seed, workdir, time_limit, on_result):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src, out = workdir / "case.ply", workdir / "case.sundae"
    counts = {k: 0 for k in OUTCOMES}
    errors: Dict[str, int] = {}
    by_seed: Dict[str, Dict[str, int]] = {}
    failures = []
    slowest = (0.0, None)
    for case in fuzzing.generate_cases("ply", count, seed, pipeline_seeds()):
        rng = np.random.default_rng([seed, case.index, 7])
        ratio = float(RATIOS[int(rng.integers(len(RATIOS)))])
        merge = MERGES[int(rng.integers(len(MERGES)))]
        src.write_bytes(case.data)
        outcome, msg, cpu = run_pipeline_case(src, out, ratio=ratio, merge=merge, time_limit=time_limit)
        counts[outcome] += 1
        if outcome == "error":  # the kind of refusal: the message without the path and numbers
            kind = re.sub(r"[-+]?\d[\d.,e+-]*", "N", msg.split(": ", 1)[-1])[:70]
            errors[kind] = errors.get(kind, 0) + 1
        by_seed.setdefault(case.seed_name, {}).setdefault(outcome, 0)
        by_seed[case.seed_name][outcome] += 1
        if cpu > slowest[0]:
            slowest = (cpu, {"index": case.index, "seed": case.seed_name, "mutations": case.mutations,
                             "ratio": ratio, "merge": merge, "outcome": outcome})
        if outcome not in ACCEPTED:
            failures.append({"index": case.index, "seed": case.seed_name, "mutations": case.mutations,
                             "ratio": ratio, "merge": merge, "outcome": outcome, "message": msg})
            if len(failures) <= 20:
                (workdir / f"fail_{case.index}.ply").write_bytes(case.data)
        if on_result:
            on_result(case, outcome)
    return {"cases": count, "seed": seed, "counts": counts, "by_seed": by_seed,
            "error_kinds": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
            "max_cpu_seconds": slowest[0], "slowest_case": slowest[1], "failures": failures}
