"""Quality of prune-only results: every selector with and without merging, vs splat-transform.

PSNR against the original scene with ``../shared/tools/refrender.py``'s renderer (6 orbit views,
320x240; see ``prune_eval.py``). Rows are accumulated into
``benchmarks/results/prune_quality.json`` (re-running a subset replaces those cells only) and the
Markdown table is regenerated from all rows.

    .venv/bin/python benchmarks/bench_prune_quality.py --scenes guitar --ratios 0.1 \\
        --methods spectral0.5,random,collapse,st-decimate

Method names: ``spectral0.3|0.5|0.7``, ``random``, ``opacity``, ``importance`` (selection only),
the same with ``+assign`` (selection then ``merge_into``, the assign mode), ``collapse`` (edge
collapse), ``collapse+spectral`` (collapse steered by spectral scores, beta=1),
``st-decimate`` / ``st-decimate-adaptive`` (PlayCanvas splat-transform, if installed in /tmp/st).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_eval import ASSETS, ROOT, SCENES, Evaluator, select  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ST = Path("/tmp/st/node_modules/.bin/splat-transform")
SELECTORS = ["spectral0.3", "spectral0.5", "spectral0.7", "random", "opacity", "importance"]
ALL_METHODS = SELECTORS + [s + "+assign" for s in SELECTORS] + ["collapse", "collapse+spectral",
                                                                 "st-decimate", "st-decimate-adaptive"]


def _selector(name):
    if name.startswith("spectral"):
        return "spectral", float(name[len("spectral"):] or 0.5)
    return name, 0.5


def run_method(method: str, gs, count: int, scene: str, ratio: float):
    """Pruned GaussianSet for one method (or None when the tool is unavailable)."""
    from sundae_compress.io.ply import read_ply
    from sundae_compress.prune.collapse import collapse_to
    from sundae_compress.prune.merge import merge_into

    if method.startswith("st-"):
        if not ST.exists():
            return None
        out = Path(f"/tmp/st_{scene}_{method}_{ratio}.ply")
        flag = "--decimate" if method == "st-decimate" else "--decimate-adaptive"
        cmd = ["node", str(ST), "-g", "cpu", "-w", str(ASSETS / SCENES[scene]), flag, f"{ratio * 100:g}%", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:  # e.g. an option this splat-transform version lacks
            print(f"skipped {method}: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        return read_ply(out)
    if method == "collapse":
        return collapse_to(gs, count)
    if method == "collapse+spectral":
        return collapse_to(gs, count, beta=1.0)
    sel, merge = (method.split("+") + [None])[:2]
    name, gamma = _selector(sel)
    keep = select(gs, count, name, gamma=gamma)
    if merge is None:
        return gs.subset(keep)
    return merge_into(gs, keep)  # merge == "assign"


def write_tables(rows):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prune_quality.json").write_text(json.dumps(rows, indent=1) + "\n")
    scenes = [s for s in SCENES if any(r["scene"] == s for r in rows)]
    lines = ["# Prune-only quality (PSNR dB / SSIM vs the original)", "",
             "refrender's renders: mean PSNR (and SSIM) over 6 orbit views at 320x240, reference = the original "
             "scene. `+assign` = selection then `merge_into` (assign); `collapse` = "
             "`collapse_to` (pairwise edge collapse, selection-independent); `st-*` = "
             "PlayCanvas splat-transform (`-g cpu`). Empty cells were not run.", ""]
    for scene in scenes:
        ratios = sorted({r["ratio"] for r in rows if r["scene"] == scene})
        lines += [f"## {scene}", "", "| method | " + " | ".join(f"{x:g}" for x in ratios) + " |",
                  "|---|" + "---|" * len(ratios)]
        for m in ALL_METHODS:
            cells = []
            for x in ratios:
                hit = [r for r in rows if r["scene"] == scene and r["method"] == m and r["ratio"] == x]
                cells.append((f"{hit[0]['psnr']:.2f}" + (f" / {hit[0]['ssim']:.3f}" if "ssim" in hit[0] else ""))
                             if hit else "")
            if any(cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        for x in ratios:
            here = [r for r in rows if r["scene"] == scene and r["ratio"] == x]
            if here:
                b = max(here, key=lambda r: r["psnr"])
                lines.append(f"- best at {x:g}: **{b['method']}** {b['psnr']:.2f} dB")
        lines.append("")
    (RESULTS / "prune_quality.md").write_text("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", default="guitar,donut,playbot")
    ap.add_argument("--ratios", default="0.05,0.1,0.25,0.5")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    args = ap.parse_args()
    path = RESULTS / "prune_quality.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    for scene in args.scenes.split(","):
        ev = Evaluator(scene)
        gs = ev.gs
        for ratio in [float(x) for x in args.ratios.split(",")]:
            count = int(round(ratio * len(gs)))
            for method in args.methods.split(","):
                t0 = time.perf_counter()
                out = run_method(method, gs, count, scene, ratio)
                if out is None:
                    continue
                t1 = time.perf_counter() - t0
                p, ss = ev.scores(out)
                row = {"scene": scene, "ratio": ratio, "method": method, "count": len(out),
                       "psnr": round(p, 2), "ssim": round(ss, 4), "prune_s": round(t1, 2)}
                print(json.dumps(row), flush=True)
                if path.exists():  # re-read: another run may have added rows meanwhile
                    rows = json.loads(path.read_text())
                rows = [r for r in rows if not (r["scene"] == scene and r["ratio"] == ratio
                                                and r["method"] == method)] + [row]
                write_tables(rows)


if __name__ == "__main__":
    main()
