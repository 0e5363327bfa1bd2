"""Level-of-detail ladders (issue 14, part B): one ``--lod`` bundle against independent bundles.

Per shared scene and mode (prune-only, or fine-tuned with N iterations): compress one ladder
(``api.compress(lod=...)``) and, for every ratio of the ladder, an independent bundle
(``api.compress(ratio=r)``), both evaluated on the NOVEL views (``evaluate.view_sets``) against the
original scene. Reports each level's novel / worst PSNR next to the independent bundle's, the ladder's
total bytes against the largest level alone, and wall / CPU time of both (the ladder's time includes
evaluating every level, as ``sundae-compress --lod`` does; the independent bundles' time includes
evaluating each, with the original's renders shared between them).

Goals (issue 14): every level within 0.5 dB (novel views) of the independent bundle of the same
budget, and the ladder <= 1.3 x the bytes of its largest level alone.

Each invocation adds (or replaces) its scene/mode rows in ``benchmarks/results/lod.json`` and
rewrites ``lod.md`` from all rows, so scenes can run one at a time, each a short locked run:

    flock /tmp/sundae-bench.lock .venv/bin/python benchmarks/bench_lod.py --scenes guitar
    flock /tmp/sundae-bench.lock .venv/bin/python benchmarks/bench_lod.py --scenes guitar --iterations 100
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
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results"
GOAL_DB = 0.5
GOAL_BYTES = 1.3


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - w, 1), round(time.process_time() - c, 1)


def run_scene(name: str, lod: str, iterations, tmp: Path, resolution=None) -> dict:
    from sundae_compress.api import compress, evaluation_views, load_for_render, load_scene
    import numpy as np

    from sundae_compress.evaluate import evaluate_view_sets
    from sundae_compress.io.bundle import read_bundle
    from sundae_compress.lod import parse_lod

    finetune = iterations is not None
    opts = {"iterations": iterations, **({"resolution": resolution} if resolution else {})} if finetune else None
    src = ASSETS / f"{name}.ply"
    load0 = os.getloadavg()
    lad, lw, lc = _timed(lambda: compress(src, tmp / f"{name}.lod.sundae", lod=lod, finetune=finetune,
                                          finetune_options=opts, overwrite=True))
    levels = []
    ind_wall = ind_cpu = 0.0
    gs = load_scene(src)
    near, novel, _ = evaluation_views(gs, src)
    refs = {}  # the original's renders, shared by the independent bundles' evaluations
    ratios = parse_lod(lod)
    for k, r in enumerate(ratios):
        out = tmp / f"{name}.{r:g}.sundae"

        def independent():
            rep = compress(src, out, ratio=r, finetune=finetune, finetune_options=opts, overwrite=True,
                           evaluate=False)
            cand, _ = load_for_render(out)
            if k == len(ratios) - 1:
                # the finest level is made exactly as the independent bundle is (same preset, seed):
                # when it decodes to the same Gaussians, their renders (and PSNR) are the same
                mine = read_bundle(tmp / f"{name}.lod.sundae", level=k).gaussians
                if all(np.array_equal(getattr(mine, a), getattr(cand, a))
                       for a in ("means", "quats", "scales", "opacities", "sh")):
                    return rep, None
            return rep, evaluate_view_sets(gs, cand, {"near": near, "novel": novel}, references=refs)

        (ind, fid), w, c = _timed(independent)
        identical = fid is None
        if identical:
            fid = {"novel": {"psnr": lad.levels[k]["novel_psnr"]}, "worst": {"psnr": lad.levels[k]["worst_psnr"]}}
        ind_wall += w
        ind_cpu += c
        lv = lad.levels[k]
        assert lv["count"] == ind.kept_count, (lv, ind.kept_count)
        levels.append({"level": k, "ratio": r, "count": lv["count"], "quality": lv["quality"],
                       "ladder_novel": lv["novel_psnr"], "ladder_worst": lv["worst_psnr"],
                       "independent_novel": fid["novel"]["psnr"],
                       "independent_worst": fid["worst"]["psnr"],
                       "delta_db": round(lv["novel_psnr"] - fid["novel"]["psnr"], 3),
                       "ladder_level_bytes": lv["bytes"], "prefix_bytes": lv["prefix_bytes"],
                       "independent_bytes": ind.bytes_out, "independent_wall_s": w,
                       "identical_gaussians": identical})
        print(name, levels[-1], flush=True)
    largest = levels[-1]["independent_bytes"]
    mode = "prune-only" if not finetune else f"fine-tuned {iterations} it" + (f" @{resolution} px" if resolution else "")
    return {"scene": name, "mode": mode, "lod": lod,
            "n": lad.valid_count, "ladder_bytes": lad.bytes_out, "largest_alone_bytes": largest,
            "bytes_ratio": round(lad.bytes_out / largest, 4),
            "sum_of_independent_bytes": sum(lv["independent_bytes"] for lv in levels),
            "ladder_wall_s": lw, "ladder_cpu_s": lc, "independent_wall_s": round(ind_wall, 1),
            "independent_cpu_s": round(ind_cpu, 1), "levels": levels,
            "max_abs_delta_db": max(abs(lv["delta_db"]) for lv in levels),
            "goal_db_met": all(abs(lv["delta_db"]) <= GOAL_DB for lv in levels),
            "goal_bytes_met": lad.bytes_out <= GOAL_BYTES * largest,
            "load_start": [round(x, 2) for x in load0], "load_end": [round(x, 2) for x in os.getloadavg()],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "locked": bool(os.environ.get("SUNDAE_BENCH_LOCKED")), "commit": _commit()}


def design_scene(name: str, lod: str) -> dict:
    """The two layout decisions, prune-only (no timing): (1) the codec preset below the finest level
    (``medium`` vs ``low`` at every ratio), (2) nesting: level k = level k-1's Gaussians + a prune of
    the original to the difference (coarse Gaussians shared, nothing stored twice) vs independent."""
    import numpy as np
    import torch

    from sundae_compress.api import _prune, load_scene, resolve_merge
    from sundae_compress.codec import compress, decode_gaussians, encode_gaussians, quality_settings
    from sundae_compress.evaluate import render_views
    from sundae_compress.gaussians import GaussianSet
    from sundae_compress.lod import parse_lod
    from sundae_compress.metrics import psnr
    from sundae_compress.render.cameras import novel_views

    gs = load_scene(ASSETS / f"{name}.ply")
    cams = novel_views(gs)
    ref = render_views(gs, cams)

    def score(g):
        return round(float(np.mean([float(psnr(torch.from_numpy(b), torch.from_numpy(a)))
                                     for a, b in zip(ref, render_views(g, cams))])), 3)

    def coded(g, q):
        st = quality_settings(q)
        raw, meta = encode_gaussians(g, st)
        return sum(len(compress(v, st.zstd_level)) for v in raw.values()), decode_gaussians(raw, meta)

    merge = resolve_merge("auto", len(gs))
    ratios = parse_lod(lod)
    rows, levels = [], []
    for r in ratios:
        g = _prune(gs, int(round(r * len(gs))), "spectral", 0.5, merge, 0)
        levels.append(g)
        row = {"ratio": r, "count": len(g)}
        for q in ("medium", "low"):
            b, dec = coded(g, q)
            row[f"{q}_bytes"], row[f"{q}_novel"] = b, score(dec)
        rows.append(row)
    nested = [{"ratio": ratios[0], "added_bytes": rows[0]["medium_bytes"]}]
    for k in range(1, len(ratios)):
        add = _prune(gs, len(levels[k]) - len(levels[k - 1]), "spectral", 0.5, merge, 0)
        b, _ = coded(add, "medium")
        nested.append({"ratio": ratios[k], "added_bytes": b,
                       "novel": score(GaussianSet.concat([levels[k - 1], add]))})
    return {"scene": name, "lod": lod, "presets": rows, "nested": nested}


def preset_check(name: str, ratio: float, iterations: int, resolution, tmp: Path) -> dict:
    """A fine-tuned coarse level as the ladder makes it (``--quality low``: fine-tuning polishes
    through the low preset's codec round trip, then encodes at it) vs the independent bundle
    (``--quality medium``), both at ``ratio``: the only difference between such a ladder level and
    the independent bundle of its budget. PSNR only (no timing: may run outside the lock)."""
    from sundae_compress.api import compress

    opts = {"iterations": iterations, **({"resolution": resolution} if resolution else {})}
    row = {"scene": name, "ratio": ratio, "iterations": iterations, "resolution": resolution}
    for q in ("medium", "low"):
        rep = compress(ASSETS / f"{name}.ply", tmp / f"{name}.{q}.sundae", ratio=ratio, quality=q, finetune=True,
                       finetune_options=opts, overwrite=True, evaluate=True)
        row[f"{q}_novel"], row[f"{q}_worst"], row[f"{q}_bytes"] = (rep.fidelity["novel"]["psnr"],
                                                                    rep.fidelity["worst"]["psnr"], rep.bytes_out)
    row["low_minus_medium_db"] = round(row["low_novel"] - row["medium_novel"], 3)
    return row


def _commit() -> str:
    try:
        import subprocess

        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def write_md(result: dict) -> None:
    m = result["machine"]
    lines = ["# Level-of-detail ladders (`--lod`) vs independent bundles", "",
             "Generated by `benchmarks/bench_lod.py` (issue 14, part B). Machine: "
             f"{m['cores']} cores, {m['ram_gb']} GB RAM, {m['platform']}. PSNR on the 12 NOVEL views "
             "(`evaluate.view_sets`, 480x360) against the original scene; *independent* = `--ratio r` alone "
             "(default `--quality medium`); the ladder stores the levels below the finest at the next lower "
             "preset (`low`). Goals: every level within "
             f"{GOAL_DB} dB of the independent bundle, ladder <= {GOAL_BYTES} x the largest level alone. "
             "Where a ladder level decodes to exactly the same Gaussians as its independent bundle (the finest "
             "level: same preset and seed), the independent PSNR is the ladder's (note *identical Gaussians*) "
             "instead of rendering them again.", ""]
    lines += ["| scene | mode | ladder bytes | largest alone | ratio (goal <= 1.3) | max abs delta dB (goal <= 0.5) "
              "| ladder wall / CPU s | independent wall / CPU s (sum) | load start -> end | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['scene']} | {row['mode']} | {row['ladder_bytes']:,} | {row['largest_alone_bytes']:,} "
                     f"| **{row['bytes_ratio']:.3f}** {'met' if row['goal_bytes_met'] else 'NOT met'} "
                     f"| **{row['max_abs_delta_db']:.3f}** {'met' if row['goal_db_met'] else 'NOT met'} "
                     f"| {row['ladder_wall_s']} / {row['ladder_cpu_s']}{'' if row.get('locked') else ' (unlocked)'} "
                     f"| {row['independent_wall_s']} / {row['independent_cpu_s']} "
                     f"| {row['load_start'][0]} -> {row['load_end'][0]} "
                     f"| {row['peak_rss_mib']} |")
    lines += ["", "Per level:", "",
              "| scene | mode | level | ratio | Gaussians | preset | ladder novel / worst dB | independent novel / worst dB "
              "| delta dB | level bytes | independent bytes | readable after (prefix bytes) | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for lv in row["levels"]:
            lines.append(f"| {row['scene']} | {row['mode']} | {lv['level']} | {lv['ratio']:g} | {lv['count']:,} "
                         f"| {lv['quality']} | {lv['ladder_novel']:.2f} / {lv['ladder_worst']:.2f} "
                         f"| {lv['independent_novel']:.2f} / {lv['independent_worst']:.2f} | {lv['delta_db']:+.3f} "
                         f"| {lv['ladder_level_bytes']:,} | {lv['independent_bytes']:,} | {lv['prefix_bytes']:,} |"
                         + (" identical Gaussians |" if lv.get("identical_gaussians") else " |"))
    design = result.get("design") or []
    if design:
        lines += ["", "## Layout decisions (prune-only, novel-view PSNR dB; `--design`)", "",
                  "Codec preset of a level: `medium` (the default) vs `low` (what the ladder uses below the finest "
                  "level). Nested: level k = level k-1's (merged) Gaussians + a prune of the original to the "
                  "difference, so nothing is stored twice, vs the independent level.", "",
                  "| scene | ratio | Gaussians | medium bytes / dB | low bytes / dB | low - medium dB "
                  "| nested dB (nested - independent) | nested added bytes |",
                  "|---|---|---|---|---|---|---|---|"]
        for d in design:
            for p, n in zip(d["presets"], d["nested"]):
                nd = (f"{n['novel']:.2f} ({n['novel'] - p['medium_novel']:+.2f})" if "novel" in n
                      else "(= independent)")
                lines.append(f"| {d['scene']} | {p['ratio']:g} | {p['count']:,} | {p['medium_bytes']:,} / "
                             f"{p['medium_novel']:.2f} | {p['low_bytes']:,} / {p['low_novel']:.2f} "
                             f"| {p['low_novel'] - p['medium_novel']:+.3f} | {nd} | {n['added_bytes']:,} |")
    checks = result.get("preset_check") or []
    if checks:
        lines += ["", "## Fine-tuned coarse level: `--quality low` (as in a ladder) vs `medium` (independent)", "",
                  "Each fine-tuned with the same seed; the low run polishes through the low preset's codec round "
                  "trip, as a ladder's coarse level does. Novel-view PSNR; no timing (may run outside the lock).", "",
                  "| scene | ratio | fine-tuning | medium dB (worst) | low dB (worst) | low - medium dB | medium / low bytes |",
                  "|---|---|---|---|---|---|---|"]
        for c in checks:
            ft = f"{c['iterations']} it" + (f" @{c['resolution']} px" if c.get("resolution") else "")
            lines.append(f"| {c['scene']} | {c['ratio']:g} | {ft} | {c['medium_novel']:.2f} ({c['medium_worst']:.2f}) "
                         f"| {c['low_novel']:.2f} ({c['low_worst']:.2f}) | {c['low_minus_medium_db']:+.3f} "
                         f"| {c['medium_bytes']:,} / {c['low_bytes']:,} |")
    notes = result.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    (RESULTS / "lod.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", nargs="+", default=["donut", "guitar", "playbot_125k"])
    ap.add_argument("--lod", default="0.01,0.05,0.2")
    ap.add_argument("--iterations", type=int, default=None, help="fine-tune with this many iterations "
                                                                 "(default: prune-only, --no-finetune)")
    ap.add_argument("--resolution", type=int, default=None, help="largest fine-tuning image width (default: "
                                                                 "the CPU default, 400)")
    ap.add_argument("--design", action="store_true", help="measure the layout decisions instead (prune-only "
                                                            "PSNR and bytes: coarse preset, nested levels)")
    ap.add_argument("--preset-check", type=float, default=None, metavar="RATIO",
                    help="fine-tuned level at RATIO with --quality low vs medium (needs --iterations)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("SUNDAE_QUIET", "1")
    path = RESULTS / "lod.json"
    result = json.loads(path.read_text()) if path.exists() else {"rows": [], "notes": []}
    result["machine"] = {"cores": os.cpu_count(),
                         "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                         "platform": platform.platform()}
    if args.preset_check is not None:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.scenes:
                row = preset_check(name, args.preset_check, args.iterations or 100, args.resolution, Path(tmp))
                result = json.loads(path.read_text()) if path.exists() else result  # others may have written
                result["preset_check"] = [x for x in result.get("preset_check", []) if
                                          (x["scene"], x["ratio"], x["iterations"], x["resolution"])
                                          != (name, row["ratio"], row["iterations"], row["resolution"])] + [row]
                path.write_text(json.dumps(result, indent=1) + "\n")
                write_md(result)
                print(json.dumps(row), flush=True)
        return
    if args.design:
        for name in args.scenes:
            d = design_scene(name, args.lod)
            result["design"] = [x for x in result.get("design", []) if (x["scene"], x["lod"]) != (name, args.lod)] + [d]
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            write_md(result)
            print(json.dumps(d), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenes:
            row = run_scene(name, args.lod, args.iterations, Path(tmp), args.resolution)
            if path.exists():  # another invocation may have written meanwhile: merge into the latest file
                result = {**json.loads(path.read_text()), "machine": result["machine"]}
            result["rows"] = [r for r in result["rows"] if (r["scene"], r["mode"], r["lod"])
                              != (row["scene"], row["mode"], row["lod"])] + [row]
            result["rows"].sort(key=lambda r: (r["mode"], r["scene"]))
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            write_md(result)
            print(json.dumps({k: v for k, v in row.items() if k != "levels"}), flush=True)


if __name__ == "__main__":
    main()
