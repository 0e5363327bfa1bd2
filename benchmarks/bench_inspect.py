"""How quickly ``sundae-inspect`` answers: wall and CPU time of the command, next to what importing
PyTorch alone costs on the same machine (which inspect no longer does).

A bundle of guitar.ply (10 %, no fine-tuning) is written once; then ``sundae-inspect`` and
``python -c "import torch"`` each run ``--runs`` times in fresh processes, alternating. CPU time is
the children's user + system time (``resource.getrusage(RUSAGE_CHILDREN)``). Results:
``benchmarks/results/inspect_speed.{json,md}``.

    flock /tmp/sundae-bench.lock .venv/bin/python benchmarks/bench_inspect.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent


def timed(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"{cmd} failed: {p.stderr[-500:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from sundae_compress import compress

    load0 = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "guitar.sundae"
        compress(ASSETS / "guitar.ply", bundle, ratio=0.1, finetune=False)
        code = ("import sys; from sundae_compress.cli import inspect_main; "
                "inspect_main.main(sys.argv[1:], standalone_mode=False); "
                "sys.stderr.write(str('torch' in sys.modules))")
        torch_in = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT))).stderr.strip().splitlines()[-1]
        rows = {"sundae-inspect": [], "import torch": []}
        for _ in range(args.runs):
            rows["sundae-inspect"].append(timed([str(BIN / "sundae-inspect"), str(bundle)]))
            rows["import torch"].append(timed([sys.executable, "-c", "import torch"]))
        size = bundle.stat().st_size
    out = {
        "machine": {"nproc": os.cpu_count(), "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)},
        "load_avg_start": load0, "load_avg_end": os.getloadavg(),
        "wall_s_total": round(time.perf_counter() - t_start, 2),
        "peak_rss_mb_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bundle_bytes": size, "runs": args.runs, "inspect_imports_torch": torch_in == "True",
        "results": {k: {"wall_median_s": round(statistics.median(w for w, _ in v), 3),
                        "cpu_median_s": round(statistics.median(c for _, c in v), 3),
                        "wall_min_s": round(min(w for w, _ in v), 3)} for k, v in rows.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inspect_speed.json").write_text(json.dumps(out, indent=2) + "\n")
    r = out["results"]
    md = ["# sundae-inspect speed", "",
          f"`benchmarks/bench_inspect.py`: guitar 10 % bundle ({size:,} bytes), {args.runs} fresh processes each, "
          f"alternating. Machine: {out['machine']['nproc']} cores, {out['machine']['ram_gb']} GB RAM; load average "
          f"{load0[0]:.2f} at start, {out['load_avg_end'][0]:.2f} at end (a shared machine: wall times include waiting "
          "for a core; CPU times do not).", "",
          "| command | wall median (s) | wall min (s) | CPU median (s) |", "|---|---|---|---|"]
    for k, v in r.items():
        md.append(f"| `{k}` | {v['wall_median_s']} | {v['wall_min_s']} | {v['cpu_median_s']} |")
    md += ["", f"`sundae-inspect` imports torch: {out['inspect_imports_torch']}. Before this change it did "
               "(codec/vq.py imported torch at module level), so every inspect paid at least the `import torch` row."]
    (RESULTS / "inspect_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
