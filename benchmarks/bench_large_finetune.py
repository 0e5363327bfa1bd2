"""Benchmark: the default fine-tune on a large (4.9 M Gaussian) scene stays usable (issue 11).

A shared scene is tiled to ``--n`` Gaussians (:func:`bench_merge.tiled_scene`: copies on a 3D
grid, 1e-4 jitter), written once to ``benchmarks/work/large/SCENE_N.ply`` (gitignored; never
committed), and compressed through the real command line, as a user would:

* ``default``   ``sundae-compress BIG.ply -o BIG.sundae --ratio 0.1 --json`` (fine-tune on; above
                ``TEACHER_POOL_ABOVE`` Gaussians the teacher is a pool of renders, cropped per step;
                the written bundle is scored on near / novel / worst views)
* ``prune``     the same with ``--no-finetune --eval`` (prune-only comparison, same evaluation)

Each row is its own subprocess; wall, CPU (user+sys) and peak RSS are that process's own (``os.wait4``),
the load average is recorded at its start and end. Per-stage seconds (read, prune, finetune - with
its teacher-pool share -, write, evaluate), PSNRs and bytes come from the CLI's ``--json`` report.
A row that runs past ``--timeout`` seconds is stopped and recorded as such.

    flock /tmp/sundae-bench.lock .venv/bin/python benchmarks/bench_large_finetune.py --n 4900000
    .venv/bin/python benchmarks/bench_large_finetune.py --n 500000 --no-write     # quick check

Results: benchmarks/results/large_finetune.{json,md} (rows of other N / scene are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work" / "large"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

ROWS = {"default": [], "prune": ["--no-finetune", "--eval"]}
#: the figure the goal is stated against (issue 11): the old default on a 4.9 M scene
OLD_DEFAULT = {"wall_s": 524, "peak_rss_gb": 3.8}


def load_avg():
    return [round(x, 2) for x in os.getloadavg()]


def scene_path(scene: str, n: int) -> Path:
    return WORK / f"{scene}_{n}.ply"


def make_scene(scene: str, n: int) -> Path:
    """Tile ``scene`` to ``n`` Gaussians in a child process (its memory is not the rows')."""
    path = scene_path(scene, n)
    if path.is_file():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    code = ("import sys; sys.path[:0] = [%r, %r]\n"
            "from bench_merge import tiled_scene\n"
            "from sundae_compress.io.formats import write_scene\n"
            "write_scene(tiled_scene(%r, %d), %r, 'ply')\n") % (str(ROOT), str(ROOT / "benchmarks"),
                                                                 scene, n, str(path) + ".tmp.ply")
    subprocess.run([sys.executable, "-c", code], check=True)
    os.replace(str(path) + ".tmp.ply", path)
    return path


def run_row(scene: str, n: int, ratio: float, row: str, timeout: float) -> dict:
    src = make_scene(scene, n)
    out = WORK / f"{scene}_{n}_{row}.sundae"
    log = WORK / f"{scene}_{n}_{row}.stderr"
    cli = Path(sys.executable).with_name("sundae-compress")
    cmd = [str(cli) if cli.is_file() else sys.executable, *([] if cli.is_file() else ["-m", "sundae_compress.cli"]),
           str(src), "-o", str(out), "--ratio", str(ratio), "--overwrite", "--json", *ROWS[row]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    la0, t0 = load_avg(), time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        timed_out = False
        try:
            stdout, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            stdout, timed_out = "", True
        # the child is reaped by communicate/kill; its rusage is in RUSAGE_CHILDREN of this fresh process
    import resource
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rec = {"scene": scene, "n": n, "ratio": ratio, "row": row, "command": " ".join(["sundae-compress", src.name, "-o",
           out.name, "--ratio", str(ratio), "--json", *ROWS[row]]),
           "wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
           "peak_rss_mib": round(ru.ru_maxrss / 1024), "load_start": la0, "load_end": load_avg(),
           "timed_out": timed_out, "returncode": p.returncode}
    if timed_out or p.returncode:
        rec["stderr_tail"] = log.read_text()[-2000:]
        return rec
    rep = json.loads(stdout)
    ft = rep.get("finetune") or {}
    fid = rep.get("fidelity") or {}
    rec.update({
        "stages_s": {k: round(v, 2) for k, v in rep["stages"].items()},
        "seconds_report": round(rep["seconds"], 1),
        "finetune": {k: ft.get(k) for k in ("teacher", "iterations", "resolution", "teacher_renders",
                                            "seconds_teacher", "seconds_train", "seconds_polish",
                                            "seconds_per_iteration", "test_psnr_start", "test_psnr_end",
                                            "test_psnr_decoded")} if ft else None,
        "kept": rep["kept_count"], "bytes_in": rep["bytes_in"], "bytes_out": rep["bytes_out"],
        "near_psnr": (fid.get("near") or {}).get("psnr"), "novel_psnr": (fid.get("novel") or {}).get("psnr"),
        "worst_psnr": (fid.get("worst") or {}).get("psnr"),
        "views": {k: (fid.get(k) or {}).get("label") for k in ("near", "novel", "worst")},
    })
    return rec


def profile(scene: str, n: int, ratio: float, iterations: int, pool: int, no_precull: bool = False) -> dict:
    """Where the default's time goes, measured on a few iterations of the real code path: read,
    ``pool`` teacher renders, ``iterations`` training steps, the codec round trip, and one
    evaluation view of the original and of the pruned scene at the evaluation size. The student is
    a random ``ratio`` subset (the cost of a step depends on the count, not on which rows are kept;
    pruning itself is timed in the CLI rows). ``no_precull``: project without the off-screen
    pre-cull (the code before it), for a before/after comparison in the same conditions."""
    import numpy as np

    from sundae_compress.api import finetune_hooks
    from sundae_compress.compensate.train import finetune
    from sundae_compress.evaluate import view_sets
    from sundae_compress.io.formats import read_scene
    from sundae_compress.render import render

    if no_precull:
        import math

        import torch

        from sundae_compress.render import project as P

        def near_and_opacity_only(means, scales, opacity_logits, R, t, camera, tanx, tany):
            z = means @ R[2] + t[2]
            ok = (z > P.NEAR) & (opacity_logits > math.log(P.ALPHA_MIN / (1 - P.ALPHA_MIN)))
            return torch.nonzero(ok).squeeze(1)

        P._precull = near_and_opacity_only
    out = {"scene": scene, "n": n, "iterations": iterations, "pool_views": pool, "precull": not no_precull}
    t = time.perf_counter()
    gs = read_scene(scene_path(scene, n))
    out["read_s"] = round(time.perf_counter() - t, 2)
    rng = np.random.default_rng(0)
    kept = gs.subset(np.sort(rng.choice(len(gs), int(round(ratio * len(gs))), replace=False)))
    hooks = finetune_hooks()
    res = finetune(gs, kept, iterations=iterations, pool_views=pool, teacher="pool", eval_views=0,
                   quantise_aware="none", progress=False, target_count=len(kept))
    st = res.stats
    out.update({"pool_render_s": round(st["seconds_teacher"] / max(st["teacher_renders"], 1), 2),
                "train_s_per_iteration": st["seconds_per_iteration"],
                "resolution": res.config["resolution"], "train_widths": res.config["train_widths"]})
    t = time.perf_counter()
    hooks.roundtrip(res.gaussians)
    out["roundtrip_s"] = round(time.perf_counter() - t, 2)
    sets = view_sets(gs)
    out["eval_views"] = {k: len(v) for k, v in sets.items()}
    for name, g in (("original", gs), ("pruned", kept)):
        cams = sets["novel"][:3]
        t = time.perf_counter()
        for cam in cams:
            render(g, cam)
        out[f"eval_render_{name}_s"] = round((time.perf_counter() - t) / len(cams), 2)
        out["eval_size"] = [cams[0].width, cams[0].height]
    out["loadavg"] = load_avg()
    return out


def child(args) -> None:
    if args.profile:
        rec = profile(args.scene, args.n, args.ratio, args.profile, args.pool, args.no_precull)
        rec["peak_rss_mib"] = round(__import__("resource").getrusage(0).ru_maxrss / 1024)
        print(json.dumps(rec))
        if not args.no_write:
            write_profile(rec)
            write_md()
        return
    print(json.dumps(run_row(args.scene, args.n, args.ratio, args.row, args.timeout)))


def write_profile(rec) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "large_finetune.json"
    data = json.loads(path.read_text()) if path.exists() else {"info": {}, "rows": []}
    key = lambda r: (r["scene"], r["n"], r["precull"])  # noqa: E731
    data["profile"] = [r for r in data.get("profile", []) if key(r) != key(rec)] + [rec]
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_results(rows, info) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    old = RESULTS / "large_finetune.json"
    if old.exists():  # keep rows of other (scene, n, row) runs
        prev = json.loads(old.read_text())["rows"]
        key = lambda r: (r["scene"], r["n"], r["row"], r["ratio"])  # noqa: E731
        rows = [r for r in prev if key(r) not in {key(x) for x in rows}] + rows
        info = {**json.loads(old.read_text()).get("info", {}), **info}
    rows.sort(key=lambda r: (r["n"], r["row"]))
    prof = json.loads(old.read_text()).get("profile", []) if old.exists() else []
    (RESULTS / "large_finetune.json").write_text(json.dumps({"info": info, "rows": rows, "profile": prof},
                                                            indent=2) + "\n")


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def write_md(status: str = "") -> None:
    """``large_finetune.md`` from the JSON (plus the hand-written status paragraph, kept as is)."""
    data = json.loads((RESULTS / "large_finetune.json").read_text())
    info = data["info"]
    md = RESULTS / "large_finetune.md"
    if not status and md.exists():  # keep the status paragraph written after the measurement
        text = md.read_text()
        if "## Status against the goal" in text:
            status = text.split("## Status against the goal", 1)[1].strip()
    lines = ["# Default fine-tune on a large scene (issue 11)", "",
             f"Generated by `benchmarks/bench_large_finetune.py`. Machine: {info.get('machine')}. "
             "Each row is the real command line in its own process (wall, CPU = user+sys, peak RSS from "
             "its rusage); per-stage seconds, PSNRs and bytes from its `--json` report; load average "
             "(1, 5, 15 min) at the row's start and end. Timed rows ran under `flock /tmp/sundae-bench.lock`.",
             "", "| scene | N | row | wall s | CPU s | peak RSS MiB | read | prune | finetune (teacher pool) | write "
             "| evaluate | kept | bytes | near dB | novel dB | worst dB | load start -> end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        st = r.get("stages_s", {})
        ft = r.get("finetune") or {}
        fts = (f"{st['finetune']:.1f} ({ft.get('seconds_teacher', 0):.1f}, {ft.get('teacher_renders')} "
               f"{ft.get('teacher')} renders)") if "finetune" in st else "-"
        if r.get("timed_out"):
            fts = f"stopped after {r['wall_s']:.0f} s"
        lines.append(f"| {r['scene']} | {r['n']:,} | {r['row']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{r['peak_rss_mib']:,} | {_f(st.get('read'), '{:.1f}')} | {_f(st.get('prune'), '{:.1f}')} | "
                     f"{fts} | {_f(st.get('write'), '{:.1f}')} | {_f(st.get('evaluate'), '{:.1f}')} | "
                     f"{r.get('kept', 0):,} | {r.get('bytes_out', 0):,} | {_f(r.get('near_psnr'))} | "
                     f"{_f(r.get('novel_psnr'))} | {_f(r.get('worst_psnr'))} | {r['load_start']} -> {r['load_end']} |")
    if data.get("profile"):
        lines += ["", "## Where the time goes (a few iterations of the real code path)", "",
                  "`--profile K --pool P`: P pool teacher renders of the full scene, K training steps of a "
                  "random 10 % student (training widths 160-400 px, pool crops 0.5-1x), the codec round trip, "
                  "and 3 evaluation views (480x360) of the full and of the 10 % scene; with and without the "
                  "off-screen pre-cull in `render/project.py` (same machine, same cameras).", "",
                  "| N | pre-cull | teacher pool render s/view | training s/iteration | codec round trip s | "
                  "eval render full s/view | eval render 10 % s/view | peak RSS MiB | load |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in data["profile"]:
            lines.append(f"| {p['n']:,} | {'on' if p['precull'] else 'off'} | {p['pool_render_s']:.2f} | "
                         f"{p['train_s_per_iteration']:.2f} | {p['roundtrip_s']:.2f} | "
                         f"{p['eval_render_original_s']:.2f} | {p['eval_render_pruned_s']:.2f} | "
                         f"{p['peak_rss_mib']:,} | {p['loadavg']} |")
    if status:
        lines += ["", "## Status against the goal", "", status]
    md.write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4_900_000)
    ap.add_argument("--scene", default="playbot")
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--rows", default="default,prune")
    ap.add_argument("--timeout", type=float, default=1500.0, help="stop a row after this many seconds")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="only time the pieces: K training iterations, --pool teacher renders")
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--no-precull", action="store_true", help="profile without the off-screen pre-cull")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile:
        make_scene(args.scene, args.n)
    if args.row or args.profile:
        child(args)
        return
    make_scene(args.scene, args.n)
    rows = []
    for row in args.rows.split(","):
        cmd = [sys.executable, __file__, "--row", row, "--n", str(args.n), "--scene", args.scene,
               "--ratio", str(args.ratio), "--timeout", str(args.timeout)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            raise SystemExit(f"{row} failed")
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps(rec), flush=True)
        rows.append(rec)
    info = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM, "
                       f"{platform.platform()}",
            "old_default_4.9M": OLD_DEFAULT}
    if not args.no_write:
        write_results(rows, info)
        write_md()


if __name__ == "__main__":
    main()
