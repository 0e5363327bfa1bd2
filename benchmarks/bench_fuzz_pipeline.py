"""Fuzzing of the whole no-fine-tune pipeline (read → prune + merge → encode).

Runs ``tests/pipeline_fuzzing.py`` (see its docstring for seeds, mutations and outcomes) for
``--cases`` mutated PLYs (default 1,200), each compressed with a ratio and merge mode drawn per
case, under a 20 CPU-second limit (SIGPROF; 120 s wall backstop). Allowed outcomes: a bundle was
written, or a one-line SundaeError; anything else (another exception, a warning reaching the
user, a hang) is a failure, listed with its case index, seed, mutations, ratio and merge mode.

Writes benchmarks/results/fuzz_pipeline.json and .md.
Usage: ``python benchmarks/bench_fuzz_pipeline.py [--cases 1200] [--seed 2025]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "benchmarks" / "results"

import pipeline_fuzzing as pf  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    done = [0]

    def tick(case, outcome):
        done[0] += 1
        if done[0] % 100 == 0:
            print(f"{done[0]}/{args.cases} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        s = pf.fuzz_pipeline(args.cases, args.seed, Path(tmp), time_limit=20.0, on_result=tick)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    machine = {"nproc": os.cpu_count(), "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
               "python": platform.python_version(), "platform": platform.platform(),
               "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    doc = {"machine": machine, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "limits": {"cpu_seconds_per_case": 20.0, "wall_seconds_per_case": 120.0}, **s}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz_pipeline.json").write_text(json.dumps(doc, indent=1) + "\n")
    c = s["counts"]
    lines = [
        "# Pipeline fuzzing (mutated PLYs through `compress --no-finetune`)", "",
        f"Machine: nproc {machine['nproc']}, {machine['ram_gb']} GB RAM, load average at start "
        f"{', '.join(f'{v:.2f}' for v in load0)}, at end {', '.join(f'{v:.2f}' for v in machine['loadavg_end'])} "
        "(shared with other jobs).",
        f"Wall {wall:.0f} s, CPU {cpu:.0f} s, peak RSS {doc['peak_rss_mb']:.0f} MB. Seed {args.seed}.", "",
        f"**{args.cases} cases: {c['ok']} compressed, {c['error']} refused with a one-line error, "
        f"{c['crash']} tracebacks, {c['warning']} leaked warnings, {c['hang']} hangs** "
        f"(limit 20 CPU s per case; slowest case {s['max_cpu_seconds']:.2f} CPU s: {s['slowest_case']}).", "",
        "| seed file | " + " | ".join(pf.OUTCOMES) + " |", "|---|" + "---|" * len(pf.OUTCOMES)]
    for name, cnt in sorted(s["by_seed"].items()):
        lines.append(f"| {name} | " + " | ".join(str(cnt.get(o, 0)) for o in pf.OUTCOMES) + " |")
    lines += ["", "Most common refusals (message without path and numbers):", "", "| count | message |", "|---|---|"]
    lines += [f"| {n} | {k} |" for k, n in list(s["error_kinds"].items())[:15]]
    if s["failures"]:
        lines += ["", "Failures:", ""] + [f"- case {f['index']} ({f['seed']}, {'+'.join(f['mutations'])}, "
                                          f"ratio {f['ratio']}, merge {f['merge']}): {f['outcome']}: {f['message']}"
                                          for f in s["failures"][:50]]
    (args.out / "fuzz_pipeline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if c["crash"] + c["warning"] + c["hang"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
