"""Fuzzing of the PLY reader and the bundle reader (the two readers of untrusted input).

Runs the seeded mutation engine of ``tests/fuzzing.py`` (see its docstring for the mutations) for
``--cases`` files per reader (default 5,000 each, 10,000 in all), every case under a 5 s alarm
and with tracemalloc tracing the peak allocation (numpy buffers included). Allowed outcomes: a
successful read or a one-line SundaeError; anything else (another exception type, a hang, a peak
above 64 MB + 16 × the file size) is a failure and is listed with its case index, seed file and
mutations (replay: ``generate_cases(target, index + 1, seed, seeds)``, last case).

Writes benchmarks/results/fuzz.json and fuzz.md.
Usage: ``python benchmarks/bench_fuzz.py [--cases 5000] [--seed 2024]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "benchmarks" / "results"

import fuzzing  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=5000, help="cases per reader")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--targets", default="ply,bundle")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # numpy overflow warnings on garbage values are expected
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets.split(","):
            t0 = time.perf_counter()
            done = [0]

            def tick(case, r):
                done[0] += 1
                if done[0] % 500 == 0:
                    print(f"{target}: {done[0]}/{args.cases} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                          flush=True)

            s = fuzzing.fuzz(target, args.cases, args.seed, Path(tmp) / target, on_result=tick)
            s["wall_seconds"] = round(time.perf_counter() - t0, 1)
            results[target] = s
            print(f"{target}: {s['counts']} max {s['max_seconds']:.2f} s/case, "
                  f"max traced peak {s['max_peak_bytes'] / 2**20:.1f} MB", file=sys.stderr)
    doc = {"machine": {"python": platform.python_version(), "platform": platform.platform()},
           "seed": args.seed, "cases_per_reader": args.cases,
           "limits": {"seconds_per_case": 5.0, "memory": "64 MB + 16 x file size (tracemalloc peak)"},
           "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz.json").write_text(json.dumps(doc, indent=2))
    (args.out / "fuzz.md").write_text(markdown(doc))
    bad = sum(r["counts"][k] for r in results.values() for k in ("crash", "hang", "memory"))
    return 1 if bad else 0


def markdown(doc) -> str:
    lines = ["# Reader fuzzing", "",
             f"Seeded mutation fuzzing (`benchmarks/bench_fuzz.py`, engine `tests/fuzzing.py`), seed {doc['seed']}, "
             f"{doc['cases_per_reader']:,} cases per reader. Allowed: a successful read (`ok`) or a one-line "
             f"SundaeError (`error`). Failures: `crash` (any other exception), `hang` (> 5 s), "
             f"`memory` (tracemalloc peak > 64 MB + 16 × file size).", "",
             "| reader | cases | ok | error | crash | hang | memory | max s/case | max traced peak | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t, r in doc["results"].items():
        c = r["counts"]
        lines.append(f"| {t} | {r['cases']:,} | {c['ok']:,} | {c['error']:,} | {c['crash']} | {c['hang']} | "
                     f"{c['memory']} | {r['max_seconds']:.2f} | {r['max_peak_bytes'] / 2**20:.1f} MB | "
                     f"{r['wall_seconds']} |")
    for t, r in doc["results"].items():
        lines += ["", f"## {t}: outcomes per mutation", "", "| mutation | ok | error | failures |", "|---|---:|---:|---:|"]
        for m, c in sorted(r["by_mutation"].items()):
            fails = sum(v for k, v in c.items() if k not in ("ok", "error"))
            lines.append(f"| {m} | {c.get('ok', 0)} | {c.get('error', 0)} | {fails} |")
        if r["failures"]:
            lines += ["", f"### {t}: failures (first 20)", ""]
            for f in r["failures"][:20]:
                lines.append(f"- case {f['index']} (seed `{f['seed']}`, {' + '.join(f['mutations'])}): "
                             f"**{f['outcome']}** {f['message'][:200]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
