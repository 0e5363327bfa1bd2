"""Benchmark: does the compressed scene hold from every viewpoint? (issue 11)

For each shared scene at ratio 0.1 (and 0.05 / 0.25 for guitar) three configurations are run
end to end through the command line, each in its own subprocess (wall time and peak RSS are that
process's own, from ``os.wait4``):

* ``prune``    ``sundae-compress X.ply --ratio R --no-finetune`` (current code)
* ``old``      the fine-tuning default before issue 11 (commit ``BASELINE``: 21 fixed orbit
               training views, 300 iterations at 224 px, compensation net on), run from a
               ``git archive`` of that commit, so the figure is measured, not reproduced
* ``new``      ``sundae-compress X.ply --ratio R`` with today's defaults

Each written bundle is then read back (decoded Gaussians + ONNX net, exactly what a viewer gets)
and scored with :func:`sundae_compress.evaluate.evaluate_view_sets` against the original scene:
``near`` (views like the ones the trainer samples), ``novel`` (the deterministic set the trainer
provably never samples, :func:`sundae_compress.render.cameras.novel_views`), ``worst`` (the
lowest-PSNR novel view), plus ``orbit``: the held-out orbit views the old trainer reported
(interpolation between its training views; "today's near-training" figure).

How these figures relate to ``sundae-eval ORIGINAL BUNDLE`` (and to the summary ``sundae-compress``
prints): the **novel** set and its worst view are the same views, scored the same way on the same
written bundle (:func:`score_bundle`; tests/test_eval_paths.py), so they agree to the last digit
(playbot_125k 10 % new default: 33.2322 / worst 27.8126 dB from this bench, from ``sundae-eval`` and
from the compress run's own summary), and a fresh ``sundae-compress`` with the same code writes
bit-identical Gaussians (checked at 1 and 2 threads, load 1 to 9). A different figure for "the same
configuration" comes from a different bundle: other code (the guitar and donut new-default rows
were written before codec v4; today's code gives guitar 41.91 / 35.30 and donut 31.86 / 25.11, see
results/worst_views.md) or other options. The **near** sets differ by design: this bench's ``near``
column is :func:`sundae_compress.evaluate.view_sets`' 6 training-distribution draws, whereas
``sundae-eval`` / ``sundae-compress`` print as "near" the views of
:func:`sundae_compress.api.evaluation_views`: the held-out camera-file views (demo: the same as
here) or, without a camera file, 8 generated orbit views at 320x240 (seed ``EVAL_VIEW_SEED`` = 1),
which is this bench's ``orbit`` column.

    flock /tmp/sundae-bench.lock python benchmarks/bench_generalisation.py
    python benchmarks/bench_generalisation.py --only compress --configs old   # one stage

Results: benchmarks/results/generalisation.md and .json. Bundles and per-run records are kept in
benchmarks/work/generalisation/ so a stage can be re-run without redoing the others.
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
sys.path.insert(0, str(ROOT))
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work" / "generalisation"
#: the last commit with the old fine-tuning default (fixed orbit views + net)
BASELINE = "736f832"
#: the shared scenes, plus ``demo``: the scene ``make demo`` compresses (examples/make_scene.py,
#: generated into WORK with its cameras.json: an inside-out capture whose near views are real
#: camera-file views, held out of training)
SCENES = ("donut", "guitar", "playbot_125k", "demo")
RUNS = [(s, 0.1) for s in SCENES] + [("guitar", 0.05), ("guitar", 0.25)]
CONFIGS = ("prune", "old", "new", "new_1200", "new_net", "new_net_k4")
#: extra options per configuration (after ``--ratio``)
EXTRA = {"prune": ["--no-finetune"], "old": [], "new": [], "new_1200": ["--iterations", "1200"],
         "new_net": ["--net"], "new_net_k4": ["--net", "--features", "4"]}
#: the net / feature-channel measurement runs on one scene only (issue 11, item 3)
NET_RUNS = [("guitar", 0.1)]
#: the more-time-more-quality knob is measured on one scene
ITER_RUNS = [("playbot_125k", 0.1)]
LABELS = {"prune": "prune only (--no-finetune)", "old": f"old default ({BASELINE}: orbit views + net)",
          "new": "new default", "new_1200": "new default + --iterations 1200", "new_net": "new default + --net",
          "new_net_k4": "new default + --net --features 4"}
#: what the committed result does not (yet) cover, printed under the table
NOTES = [
    "Coverage: every shared scene and the demo scene at 0.1 (prune only, old default, new default; the guitar "
    "old-default row is missing: the issue's own figures for it are 32.5 dB novel, worst 26.3), guitar at 0.05 / "
    "0.25, the `--iterations 1200` row on playbot_125k, and the net / feature-channel rows on guitar.",
    "Timing: new-default rows ran under /tmp/sundae-bench.lock with the native C rasteriser (render/csrc): "
    "playbot_125k (125 k, SH 2) 114.3 s wall / 176.3 s CPU / 688 MB on an idle machine (load 1.1 -> 1.5): the "
    "<= 3 min target for a 150 k scene is met; guitar 111.8 s and donut 165.9 s at load ~3 (before the codec "
    "v4 merge: their bundle bytes are v2). The old-default rows ran before the native rasteriser, under load 2-18. "
    "The net rows (guitar, --net) change novel PSNR by -0.04..+0.01 dB at three sizes for +35 KB: the net stays off.",
    "demo = examples/make_scene.py (120 k Gaussians, SH 3, a ring of 24 cameras inside a sky shell): its near "
    "views are the 3 held-out camera-file views (640x480), and its frame (centre, radius, up) comes from those "
    "cameras, so the novel views sit around the capture instead of outside the shell.",
    "Re-run with today's code (codec v4; the default-compress baseline rows of "
    "benchmarks/results/quality_control.md, 2026-11-30, load 5-9): guitar 41.91 (worst 35.30) in 99,599 B, "
    "playbot_125k 33.23 (27.81) in 210,160 B, donut 31.86 (25.11) in 55,492 B: within 0.03 dB of the rows above "
    "(guitar and donut above were written with the v2 codec). `sundae-eval` and this benchmark score a bundle "
    "identically (tests/test_eval_paths.py); the 33.14 dB once quoted for playbot came from another bundle.",
    "Feature channels: guitar with --net --features 4 scores 41.92 (worst 35.29) at 480x360, 40.88 / 40.13 at "
    "240x180 / 960x720: identical to the default within 0.01 dB, for +52 KB (154,064 vs 102,020 B). Feature "
    "channels stay off (measured 2026-11-30 05:33-05:37 under the lock, load 3.5, code before the default scale "
    "cap landed, like every row above).",
]
#: novel views are also scored at these sizes (multi-scale check; 480x360 is the default set)
EXTRA_SIZES = ((240, 180), (960, 720))


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict:
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "ram_mb": mem, "platform": platform.platform(),
            "python": platform.python_version()}


def scene_path(scene: str) -> Path:
    """A shared scene's PLY, or the generated demo scene (made once, with its cameras.json)."""
    if scene != "demo":
        return ASSETS / f"{scene}.ply"
    ply = WORK / "demo" / "scene.ply"
    if not ply.is_file():
        subprocess.run([sys.executable, str(ROOT / "examples" / "make_scene.py"), "-o", str(ply)], check=True)
    return ply


def scene_cameras(scene: str):
    """The scene's own cameras (the demo's cameras.json), else None."""
    from sundae_compress.render.cameras import load_cameras

    cams = scene_path(scene).parent / "cameras.json"
    return load_cameras(cams) if scene == "demo" and cams.is_file() else None


def _baseline_src() -> Path:
    dst = WORK / f"baseline_{BASELINE}"
    if not (dst / "sundae_compress").is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE, "sundae_compress"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


def _run_child(cmd, env, cwd=None) -> dict:
    """Popen + wait4 so the rusage is this child's."""
    t0 = time.perf_counter()
    la0 = load_avg()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{err[-3000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "peak_rss_mb": round(ru.ru_maxrss / 1024), "load_start": la0, "load_end": load_avg(),
            "stdout": out.strip()[-2000:]}


def compress_one(scene: str, ratio: float, config: str, force: bool = False, locked: bool = True) -> dict:
    tag = f"{scene}_r{ratio:g}_{config}"
    bundle = WORK / f"{tag}.sundae"
    rec_path = WORK / f"{tag}.json"
    if rec_path.is_file() and bundle.is_file() and not force:
        return json.loads(rec_path.read_text())
    WORK.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    src = _baseline_src() if config == "old" else ROOT
    env["PYTHONPATH"] = str(src)
    code = "import sys; from sundae_compress.cli import compress_main; sys.exit(compress_main())"
    cmd = [sys.executable, "-c", code, str(scene_path(scene)), "--ratio", f"{ratio:g}",
           "-o", str(bundle), "--overwrite", "--quiet", "--json"] + EXTRA[config]
    print(f"[{time.strftime('%H:%M:%S')}] compress {tag} (load {load_avg()})", flush=True)
    # run from the source tree itself: with ``-c`` the current folder comes first on sys.path, so a
    # run started in the worktree would import the worktree's package whatever PYTHONPATH says
    rec = _run_child(cmd, env, cwd=src)
    import_check = subprocess.run([sys.executable, "-c", "import sundae_compress; print(sundae_compress.__file__)"],
                                  env=env, cwd=src, capture_output=True, text=True).stdout.strip()
    rec.update(scene=scene, ratio=ratio, config=config, bundle_bytes=bundle.stat().st_size, locked=locked,
               package=import_check,
               source=BASELINE if config == "old" else "worktree")
    rec_path.write_text(json.dumps(rec, indent=2))
    print(f"    {rec['wall_s']} s wall, {rec['cpu_s']} s CPU, {rec['peak_rss_mb']} MB", flush=True)
    return rec


# -- evaluation ------------------------------------------------------------------------------------

def _sets(gs, sizes, cameras=None):
    from sundae_compress.render.cameras import generate_cameras
    from sundae_compress.evaluate import view_sets

    sets = view_sets(gs, real_cameras=cameras)
    if cameras is None:
        # the held-out views the old trainer reported: orbit views between its training views
        # (with a camera file, it reported the held-out camera views: the near set)
        sets["orbit"] = generate_cameras(gs, 8, 320, 240, seed=1)
    for w, h in sizes:
        sets[f"novel_{w}x{h}"] = view_sets(gs, real_cameras=cameras, size=(w, h))["novel"]
    return sets


def evaluate_runs(records, sizes_for) -> None:
    """Score every record's bundle (plus the novel views at ``sizes_for(record)``); the original's
    renders are made once per scene and view set."""
    import torch

    from sundae_compress.api import load_bundle, load_scene

    torch.set_num_threads(2)
    by_scene = {}
    for rec in records:
        by_scene.setdefault(rec["scene"], []).append(rec)
    for scene, recs in by_scene.items():
        gs = load_scene(scene_path(scene))
        all_sets = _sets(gs, EXTRA_SIZES, scene_cameras(scene))
        refs = {}
        for rec in recs:
            names = [n for n in ("near", "novel", "orbit") if n in all_sets] + [f"novel_{w}x{h}" for w, h in sizes_for(rec)]
            sets = {n: all_sets[n] for n in names}
            if rec.get("eval") and set(rec["eval"]) >= set(sets):
                continue
            tag = f"{scene}_r{rec['ratio']:g}_{rec['config']}"
            print(f"[{time.strftime('%H:%M:%S')}] eval {tag} (load {load_avg()})", flush=True)
            b = load_bundle(WORK / f"{tag}.sundae")
            rec["eval"] = score_bundle(gs, b, sets, refs)
            rec["kept"] = len(b.gaussians)
            rec["net_bytes"] = len(b.net) if b.net is not None else 0
            (WORK / f"{tag}.json").write_text(json.dumps(rec, indent=2))


def score_bundle(gs, bundle, sets, refs=None) -> dict:
    """Score a bundle as it was written (``bundle``: :func:`sundae_compress.api.load_bundle`'s
    result, i.e. the decoded Gaussians + its ONNX net) against the original ``gs`` on each view
    set: ``{set: {psnr, ssim, worst, worst_view, n_views}}``. ``refs`` caches the original's
    renders per set name. The same figures as ``sundae-eval ORIGINAL BUNDLE`` on its novel views
    (tests/test_eval_paths.py checks this)."""
    from sundae_compress.compensate.infer import postprocess_from_bundle
    from sundae_compress.evaluate import _compare, render_views

    refs = {} if refs is None else refs
    post = postprocess_from_bundle(bundle)
    ev = {}
    for name, cams in sets.items():
        if name not in refs:
            refs[name] = render_views(gs, cams)
        cand = render_views(bundle.gaussians, cams, postprocess=post)
        r = _compare(gs, bundle.gaussians, cams, refs[name], cand)
        worst = min(r["views"], key=lambda v: v["psnr"])
        ev[name] = {"psnr": r["psnr"], "ssim": r["ssim"], "worst": worst["psnr"],
                    "worst_view": worst["name"], "n_views": r["n_views"]}
    return ev


# -- does a net earn its bytes on novel views? ---------------------------------------------------------

def net_probe(scene: str = "guitar", ratio: float = 0.1, views: int = 24, iterations: int = 300) -> dict:
    """Train the default-size CompensationNet on the new default's decoded Gaussians (the polish
    step: ``views`` sampled training views, ``iterations`` steps), export it as fp16 ONNX like the
    pipeline does, and score novel views at several sizes with and without it."""
    import torch

    from sundae_compress.api import load_bundle, load_scene
    from sundae_compress.compensate import CompensationNet, OnnxCompensator, export_onnx, make_postprocess
    from sundae_compress.compensate.polish import polish_net
    from sundae_compress.compensate.tensors import TorchGaussians
    from sundae_compress.evaluate import _compare, render_views, view_sets
    from sundae_compress.metrics import ssim
    from sundae_compress.render import render
    from sundae_compress.render.cameras import ViewFrame, ViewSampler

    torch.manual_seed(0)
    gs = load_scene(ASSETS / f"{scene}.ply")
    dec = load_bundle(WORK / f"{scene}_r{ratio:g}_new.sundae").gaussians
    frame = ViewFrame.of(gs)
    sampler = ViewSampler(frame, seed=11)
    cams = [sampler.sample() for _ in range(views)]
    refs = [render(gs, c).rgb.clamp(0, 1) for c in cams]
    net = CompensationNet(3, width=4, levels=4, max_width=8)
    t = time.perf_counter()
    polish_net(net, TorchGaussians.from_set(dec, 0, trainable=False), cams, refs, iterations, 1e-3, 0.2, ssim,
               render, {}, seed=0)
    onnx = export_onnx(net, half=True)
    post = make_postprocess(OnnxCompensator(onnx), 0)
    out = {"scene": scene, "ratio": ratio, "views": views, "iterations": iterations, "net_bytes": len(onnx),
           "seconds_train": round(time.perf_counter() - t, 1), "sizes": {}}
    for w, h in ((240, 180), (480, 360), (960, 720)):
        novel = view_sets(gs, size=(w, h))["novel"]
        ref = render_views(gs, novel)
        a = _compare(gs, dec, novel, ref, render_views(dec, novel))
        b = _compare(gs, dec, novel, ref, render_views(dec, novel, postprocess=post))
        out["sizes"][f"{w}x{h}"] = {"without": a["psnr"], "with": b["psnr"],
                                    "worst_without": min(v["psnr"] for v in a["views"]),
                                    "worst_with": min(v["psnr"] for v in b["views"])}
        print(f"    {w}x{h}: {a['psnr']:.2f} -> {b['psnr']:.2f} dB with the net", flush=True)
    (WORK / "net_probe.json").write_text(json.dumps(out, indent=2))
    return out


# -- report -------------------------------------------------------------------------------------------

def write_report(records, meta) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generalisation.json").write_text(json.dumps({"meta": meta, "runs": records}, indent=2))
    lines = ["# Generalisation: near, novel and worst views (issue 11)", "",
             f"Machine: {meta['machine']['nproc']} CPU cores, {meta['machine']['ram_mb']:,} MB RAM, "
             f"{meta['machine']['platform']}, python {meta['machine']['python']}. Shared with other "
             "engineers' jobs: load averages (1/5/15 min) at the start and end of each run are listed.", "",
             "Every figure is measured on the written bundle (decoded Gaussians + ONNX net when there is "
             "one) against the original scene with the project renderer. View sets "
             "(`sundae_compress.evaluate.view_sets`): **near** = 6 draws from the training distribution "
             "with another seed, 320x240; **novel** = the 12 deterministic views of "
             "`render.cameras.NOVEL_TABLE` (elevation -30..85 deg, 1.4-3.6x the content radius), 480x360, "
             "which the sampler never draws (8 deg exclusion cones, widths <= 400); **worst** = the lowest "
             "novel view; **orbit** = the 8 held-out orbit views the old trainer reported (elevations "
             "15/35/-5 deg between its training views, 320x240). Wall / CPU / peak RSS are the "
             "`sundae-compress` process alone (includes reading, pruning, fine-tuning, writing and, for "
             "the new default, the final near/novel evaluation it prints).", "",
             "| scene | ratio | configuration | novel PSNR | worst novel | novel SSIM | near PSNR | orbit PSNR "
             "| Δ novel vs prune | bundle bytes (net) | wall s | CPU s | peak RSS MB | load start → end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["scene"], r["ratio"]): r for r in records if r["config"] == "prune" and r.get("eval")}
    for r in records:
        e = r.get("eval")
        if not e:
            continue
        p = base.get((r["scene"], r["ratio"]))
        d = e["novel"]["psnr"] - p["eval"]["novel"]["psnr"] if p else None
        orbit = f"{e['orbit']['psnr']:.2f}" if "orbit" in e else "(= near)"
        lines.append(f"| {r['scene']} | {r['ratio']:g} | {LABELS[r['config']]} | {e['novel']['psnr']:.2f} | "
                     f"{e['novel']['worst']:.2f} | {e['novel']['ssim']:.4f} | {e['near']['psnr']:.2f} | "
                     f"{orbit} | {'' if d is None else f'{d:+.2f}'} | "
                     f"{r['bundle_bytes']:,} ({r.get('net_bytes', 0):,}) | {r['wall_s']:.0f}"
                     f"{'' if r.get('locked', True) else ' (no lock)'} | {r['cpu_s']:.0f} | "
                     f"{r['peak_rss_mb']:,} | {r['load_start']} → {r['load_end']} |")
    multi = [r for r in records if r.get("eval") and any(k.startswith("novel_") for k in r["eval"])]
    if multi:
        sizes = sorted({k for r in multi for k in r["eval"] if k.startswith("novel_")})
        lines += ["", "## Novel views at other resolutions (net and feature channels)", "",
                  "Same 12 novel directions, rendered at each size. The net ships only where it gains >= 0.3 dB.", "",
                  "| scene | ratio | configuration | " + " | ".join(f"{s[6:]} PSNR (worst)" for s in sizes)
                  + " | 480x360 PSNR (worst) |", "|---|---|---|" + "---|" * (len(sizes) + 1)]
        for r in multi:
            cells = [f"{r['eval'][s]['psnr']:.2f} ({r['eval'][s]['worst']:.2f})" for s in sizes]
            cells.append(f"{r['eval']['novel']['psnr']:.2f} ({r['eval']['novel']['worst']:.2f})")
            lines.append(f"| {r['scene']} | {r['ratio']:g} | {LABELS[r['config']]} | " + " | ".join(cells) + " |")
    probe = WORK / "net_probe.json"
    if probe.is_file():
        pr = json.loads(probe.read_text())
        meta["net_probe"] = pr
        lines += ["", "## Does the compensation net earn its bytes on novel views?", "",
                  f"The default-size net (width 4, fp16 ONNX, {pr['net_bytes']:,} bytes) trained on the new default's "
                  f"decoded {pr['scene']} {pr['ratio']:g} Gaussians ({pr['views']} sampled views, "
                  f"{pr['iterations']} iterations: the polish step), scored on the 12 novel directions:", "",
                  "| size | without net | with net | gain | worst without | worst with |", "|---|---|---|---|---|---|"]
        for size, v in pr["sizes"].items():
            lines.append(f"| {size} | {v['without']:.2f} | {v['with']:.2f} | {v['with'] - v['without']:+.2f} | "
                         f"{v['worst_without']:.2f} | {v['worst_with']:.2f} |")
        (RESULTS / "generalisation.json").write_text(json.dumps({"meta": meta, "runs": records}, indent=2))
    lines += [""] + [f"- {n}" for n in NOTES]
    lines += ["", f"Run: `flock /tmp/sundae-bench.lock python benchmarks/bench_generalisation.py`; "
              f"started {meta['started']}, finished {meta['finished']}."]
    (RESULTS / "generalisation.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["compress", "eval", "report", "net-probe"], default=None)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--scenes", nargs="+", default=None)
    ap.add_argument("--ratios", nargs="+", type=float, default=None)
    ap.add_argument("--force", action="store_true", help="Redo runs that already have a record.")
    ap.add_argument("--unlocked", action="store_true",
                    help="Not run under flock /tmp/sundae-bench.lock: wall times are marked as contended.")
    args = ap.parse_args(argv)
    if args.only == "net-probe":
        net_probe()
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    todo = []
    for scene, ratio in RUNS:
        for config in args.configs:
            if config.startswith("new_net") and (scene, ratio) not in NET_RUNS:
                continue
            if config == "new_1200" and (scene, ratio) not in ITER_RUNS:
                continue
            if (args.scenes is None or scene in args.scenes) and (args.ratios is None or ratio in args.ratios):
                todo.append((scene, ratio, config))
    if args.scenes:  # the order asked for
        todo.sort(key=lambda t: args.scenes.index(t[0]))
    records = [json.loads(p.read_text()) for p in sorted(WORK.glob("*.json"))
               if p.stem.rsplit("_", 1)[0] and json.loads(p.read_text()).get("eval")] if WORK.is_dir() else []

    def report():
        meta = {"machine": machine(), "started": started,
                "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "baseline": BASELINE}
        order = {c: i for i, c in enumerate(CONFIGS)}
        done = sorted([r for r in records if r.get("eval")],
                      key=lambda r: (SCENES.index(r["scene"]), r["ratio"], order[r["config"]]))
        write_report(done, meta)

    for key, group in _by_scene_ratio(todo):
        recs = []
        for scene, ratio, config in group:
            p = WORK / f"{scene}_r{ratio:g}_{config}.json"
            if args.only in (None, "compress"):
                recs.append(compress_one(scene, ratio, config, force=args.force, locked=not args.unlocked))
            elif p.is_file():
                recs.append(json.loads(p.read_text()))
        if args.only in (None, "eval"):
            evaluate_runs(recs, lambda r: EXTRA_SIZES if ((r["scene"], r["ratio"]) in NET_RUNS
                                                          and r["config"].startswith("new")) else ())
        records[:] = [r for r in records if (r["scene"], r["ratio"], r["config"]) not in
                      {(x["scene"], x["ratio"], x["config"]) for x in recs}] + recs
        if args.only != "compress":
            report()


def _by_scene_ratio(todo):
    groups = {}
    for t in todo:
        groups.setdefault((t[0], t[1]), []).append(t)
    return groups.items()


if __name__ == "__main__":
    main()
