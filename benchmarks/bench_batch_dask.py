"""Folder batch on Dask: wall time for 8 scenes with 1 vs 2 workers, and the scheduler's overhead.

Eight scenes are random 60 % subsets of the shared donut and guitar (4 each), converted with
``--no-finetune`` (the fast path, where a per-scene overhead shows most). Each configuration runs in
a fresh subprocess so its CPU time and peak RSS are its own (worker processes included, via
``RUSAGE_CHILDREN`` once the cluster is closed):

* ``single``: ``run_batch(jobs=1)`` in the process (the one-machine baseline);
* ``dask1`` / ``dask2``: ``--scheduler local:1`` / ``local:2`` (a LocalCluster of 1 or 2
  single-threaded worker processes).

Every configuration converts the folder twice: ``cold`` (a fresh process: imports, first-use
costs; for Dask also the workers' own imports) and ``warm`` (``overwrite=True`` again: what a
long-running cluster sees). The scheduler overhead per scene is ``(dask1 warm wall − single warm
wall) / 8`` (same work, one worker), and ``(dask1 warm wall − Σ task seconds) / 8``; plus the
round trip of an empty task (200 of them, one after the other, on local:1).
Results: ``benchmarks/results/batch_dask.{md,json}``. Run it under the shared lock:

    flock /tmp/sundae-bench.lock .venv/bin/python benchmarks/bench_batch_dask.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work" / "batch_dask"
ASSETS = ROOT.parent / "shared" / "assets"
sys.path.insert(0, str(ROOT))
N_SCENES = 8


def make_scenes(folder: Path) -> list:
    from sundae_compress.io.ply import read_ply, write_ply

    folder.mkdir(parents=True, exist_ok=True)
    srcs = [read_ply(ASSETS / "donut.ply"), read_ply(ASSETS / "guitar.ply")]
    sizes = []
    for i in range(N_SCENES):
        gs = srcs[i % 2]
        idx = np.sort(np.random.default_rng(i).choice(len(gs), int(0.6 * len(gs)), replace=False))
        p = folder / f"scene{i}.ply"
        if not p.exists():
            write_ply(gs.subset(idx), p)
        sizes.append(len(idx))
    return sizes


def _batch(src, out, client=None) -> dict:
    from sundae_compress.batch import run_batch
    from sundae_compress.progress import set_quiet

    set_quiet(True)
    t0 = time.perf_counter()
    res = run_batch(src, out, finetune=False, overwrite=True, client=client, as_json=True)
    wall = time.perf_counter() - t0
    assert all(r.status == "ok" for r in res.results), res.to_dict()
    return {"wall_s": wall, "task_s": sum(r.seconds for r in res.results),
            "workers": sorted({r.worker for r in res.results})}


def run_mode(mode: str) -> dict:
    src, out = WORK / "in", WORK / f"out_{mode}"
    t0 = time.perf_counter()
    r = {"mode": mode}
    if mode == "single":
        r["cold"] = _batch(src, out)
        r["warm"] = _batch(src, out)
    else:
        from sundae_compress.batch_dask import connect

        n = int(mode[-1])
        with connect(f"local:{n}") as client:
            client.wait_for_workers(n)
            r["cluster_start_s"] = time.perf_counter() - t0
            r["cold"] = _batch(src, out, client)
            r["warm"] = _batch(src, out, client)
            if n == 1:
                fut = None
                t = time.perf_counter()
                for i in range(200):
                    fut = client.submit(int, i, pure=False)
                    fut.result()
                r["empty_task_roundtrip_ms"] = (time.perf_counter() - t) / 200 * 1e3
    r["total_wall_s"] = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    r["cpu_s"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    r["peak_rss_mib"] = {"client": me.ru_maxrss / 1024, "largest_worker": kids.ru_maxrss / 1024}
    r["bundles"] = {p.name: p.stat().st_size for p in sorted(out.glob("*.sundae"))}
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--modes", default="single,dask1,dask2")
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode)))
        return
    sizes = make_scenes(WORK / "in")
    load0 = os.getloadavg()
    t0 = time.time()
    runs = []
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for mode in args.modes.split(","):
        la = os.getloadavg()[0]
        p = subprocess.run([sys.executable, __file__, "--mode", mode], capture_output=True, text=True, env=env,
                           cwd=ROOT)
        if p.returncode:
            sys.exit(f"{mode} failed:\n{p.stderr[-3000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["load_1min_at_start"] = la
        runs.append(r)
        print(mode, json.dumps(r), flush=True)
    load1 = os.getloadavg()
    by = {r["mode"]: r for r in runs}
    same = len({json.dumps(r["bundles"], sort_keys=True) for r in runs}) == 1
    summary = {}
    if "single" in by and "dask1" in by:
        summary["overhead_per_scene_vs_single_ms"] = (by["dask1"]["warm"]["wall_s"] - by["single"]["warm"]["wall_s"]) / N_SCENES * 1e3
        summary["overhead_per_scene_vs_task_time_ms"] = (by["dask1"]["warm"]["wall_s"] - by["dask1"]["warm"]["task_s"]) / N_SCENES * 1e3
        summary["empty_task_roundtrip_ms"] = by["dask1"].get("empty_task_roundtrip_ms")
    if "dask1" in by and "dask2" in by:
        summary["speedup_2_vs_1_warm"] = by["dask1"]["warm"]["wall_s"] / by["dask2"]["warm"]["wall_s"]
        summary["speedup_2_vs_1_cold"] = by["dask1"]["cold"]["wall_s"] / by["dask2"]["cold"]["wall_s"]
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    result = {"machine": {"nproc": os.cpu_count(), "ram_gib": round(int(meminfo) / 2**20, 1),
                          "platform": platform.platform()},
              "load_avg_start": load0, "load_avg_end": load1, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
              "scenes": {"count": N_SCENES, "gaussians": sizes, "finetune": False},
              "identical_bundles_across_modes": same, "runs": runs, "summary": summary}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch_dask.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "batch_dask.md").write_text(to_md(result))
    print(to_md(result))


def to_md(r: dict) -> str:
    m = r["machine"]
    lines = ["# Folder batch on Dask: 1 vs 2 workers, scheduler overhead", "",
             f"{r['scenes']['count']} scenes (random 60 % subsets of donut and guitar: "
             f"{', '.join(f'{n:,}' for n in r['scenes']['gaussians'])} Gaussians), `--no-finetune`; "
             f"{m['nproc']} cores, {m['ram_gib']} GiB RAM ({m['platform']}); started {r['started']}; "
             f"load average at start {[round(x, 2) for x in r['load_avg_start']]}, at end "
             f"{[round(x, 2) for x in r['load_avg_end']]} (a shared machine: other engineers' jobs ran).", "",
             "Each configuration is a fresh process; `cold` = its first pass over the folder (imports, and for Dask "
             "the workers' own imports of torch & co.), `warm` = a second pass with `--overwrite` (a long-running "
             "cluster). CPU and peak RSS include the worker processes.", "",
             "| configuration | cluster start s | cold wall s | warm wall s | Σ task s (warm) | total wall s | CPU s | "
             "peak RSS client / largest worker MiB | load (1 min) at start |",
             "|---|---|---|---|---|---|---|---|---|"]
    names = {"single": "one machine, `--jobs 1` (no Dask)", "dask1": "`--scheduler local:1`",
             "dask2": "`--scheduler local:2`"}
    for x in r["runs"]:
        lines.append(f"| {names[x['mode']]} | {x.get('cluster_start_s', 0):.1f} | {x['cold']['wall_s']:.2f} | "
                     f"{x['warm']['wall_s']:.2f} | {x['warm']['task_s']:.2f} | {x['total_wall_s']:.1f} | {x['cpu_s']:.1f} | "
                     f"{x['peak_rss_mib']['client']:.0f} / {x['peak_rss_mib']['largest_worker']:.0f} | "
                     f"{x['load_1min_at_start']:.2f} |")
    s = r["summary"]
    lines += ["", f"Bundles identical across the configurations: **{r['identical_bundles_across_modes']}**.", ""]
    if "speedup_2_vs_1_warm" in s:
        lines.append(f"- 2 workers vs 1: **{s['speedup_2_vs_1_warm']:.2f}×** warm, {s['speedup_2_vs_1_cold']:.2f}× cold.")
    if "overhead_per_scene_vs_single_ms" in s:
        lines.append(f"- Scheduler overhead per scene (warm, 1 worker): **{s['overhead_per_scene_vs_single_ms']:.0f} ms** "
                     f"vs the one-machine batch; {s['overhead_per_scene_vs_task_time_ms']:.0f} ms of batch wall time "
                     f"per scene outside the tasks; an empty task's round trip: {s['empty_task_roundtrip_ms']:.1f} ms.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
