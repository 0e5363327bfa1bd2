"""Benchmark: what fine-tuning and neural compensation buy over pruning alone.

Superseded for fidelity claims by ``bench_generalisation.py``: the held-out orbit views used here
sit between the training views, so they measure interpolation, not what a viewer sees elsewhere
(issue 11). Kept for the variants (net width, quantisation modes, continuous pruning) on fixed views.

For each scene at ratio 0.1, on generated orbit cameras (every 8th view held out), with the
default CPU fine-tuning budget unless overridden:

* ``prune``        the pipeline's prune step (``api.prune_scene``, ``--merge auto`` = pairwise
                   collapse up to 1.5 M Gaussians, else spectral selection + assignment), no training
* ``ft``           + fine-tuning of the Gaussians (distillation from the original scene)
* ``ft_net``       + the compensation U-Net with the pipeline defaults (K = ``--features`` = 0
                   feature channels, width 8 / max width 16, fp16 ONNX weights): the full method
* ``continuous``   full method, pruning continuously during fine-tuning (from ratio 0.3)
* ``cli``          the exact end-to-end default: ``sundae_compress.compress(ply, out, ratio=0.1)``
                   (own teacher renders, same generated cameras), the written bundle evaluated with
                   ``api.load_for_render`` + ``evaluate.evaluate`` on the same held-out views

Not in the default list (``--variants ...``): ``ft_net_k4`` (the default net + 4 feature channels),
``ft_net_w16`` (the CompensationNet class default: width 16, max width 40, fp32 ONNX),
``ft_net_ste`` / ``ft_net_none`` / ``ft_net_decode`` (quantisation-aware modes).

Every variant is measured through the file it produces: the Gaussians (and ONNX net) are written
with ``write_bundle``, read back, rendered, passed through the ONNX net with onnxruntime and
compared with the original scene's renders on the held-out views (PSNR, SSIM). Each variant runs in
its own subprocess so that its peak memory (max RSS) is its own; teacher renders are cached per scene.

    python benchmarks/bench_finetune.py --scenes guitar donut playbot_125k
    python benchmarks/bench_finetune.py --quant-compare guitar   # decode-polish vs STE

Results: benchmarks/results/finetune.json and finetune.md. Rows are merged with earlier runs of the
SAME configuration only (iterations, resolution, views, features, net size, merge, ...); rows of an
older configuration are moved to the "earlier" list / section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("prune", "ft", "ft_net", "continuous", "cli")
LABELS = {"prune": "prune only", "ft": "+ fine-tune", "ft_net": "+ fine-tune + net",
          "ft_net_k4": "+ fine-tune + net, K=4 features", "ft_net_w16": "+ fine-tune + width-16 fp32 net",
          "ft_net_small": "+ fine-tune + small fp16 net",
          "continuous": "continuous pruning + net", "cli": "CLI default (compress(ratio=0.1))",
          "ft_net_decode": "+ fine-tune + net, decode polish",
          "ft_net_ste": "+ fine-tune + net, STE + decode polish", "ft_net_none": "+ fine-tune + net, no quant step"}
#: what makes rows comparable (rows of another configuration are moved to "earlier")
CONFIG_KEYS = ("ratio", "iterations", "resolution", "views", "features", "polish", "quantise", "merge",
               "net_width", "net_max_width", "half", "schedule", "continuous_start", "threads")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- one variant (runs in a subprocess) ---------------------------------------------------------------

def _scene_setup(scene: str, args, cache: Path):
    import torch

    from sundae_compress.io.ply import read_ply
    from sundae_compress.render import render
    from sundae_compress.render.cameras import generate_cameras, split_views

    gs = read_ply(ASSETS / f"{scene}.ply")
    w = args.resolution
    h = int(round(w * 3 / 4))
    cams = generate_cameras(gs, args.views, w, h, seed=0)
    f = cache / f"{scene}_{w}_{args.views}.npz"
    if f.exists():
        data = np.load(f)
        imgs = {c.name: data[c.name] for c in cams}
    else:
        t = time.perf_counter()
        params = gs.to_torch()
        imgs = {}
        with torch.no_grad():
            for c in cams:
                imgs[c.name] = render(params, c).rgb.clamp(0, 1).numpy()
        np.savez(f, **imgs)
        (cache / f"{scene}_teacher_seconds.txt").write_text(f"{time.perf_counter() - t:.2f}")
    train, test = split_views(cams, holdout_every=8)
    return gs, cams, train, test, imgs


def _evaluate_bundle(path: Path, test, imgs):
    import torch

    from sundae_compress.compensate.onnx_io import OnnxCompensator
    from sundae_compress.compensate.train import make_postprocess
    from sundae_compress.io.bundle import read_bundle
    from sundae_compress.metrics import psnr, ssim
    from sundae_compress.render import render

    b = read_bundle(path)
    post = None
    if b.net:
        post = make_postprocess(OnnxCompensator(b.net), (b.net_meta or {}).get("num_features", 0))
    ps, ss = [], []
    params = b.gaussians.to_torch()
    feats = params.pop("features")
    with torch.no_grad():
        for c in test:
            out = render(params, c, features=feats)
            y = post(out) if post else out.rgb.clamp(0, 1)
            ref = torch.from_numpy(imgs[c.name])
            ps.append(float(psnr(y, ref)))
            ss.append(float(ssim(y, ref)))
    return float(np.mean(ps)), float(np.mean(ss)), len(b.gaussians)


def _run_cli(scene: str, args, gs, test) -> dict:
    """The exact end-to-end default, evaluated through the public loading path."""
    import sundae_compress
    from sundae_compress.api import load_for_render
    from sundae_compress.evaluate import evaluate

    row = {"scene": scene, "variant": "cli", "n_original": len(gs), "load_before": load_avg()}
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / f"{scene}.sundae"
        t0 = time.perf_counter()
        rep = sundae_compress.compress(ASSETS / f"{scene}.ply", out, ratio=args.ratio)
        row["seconds_total"] = round(time.perf_counter() - t0, 2)
        row["stages"] = {k: round(v, 2) for k, v in rep.stages.items()}
        row["merge"] = rep.merge
        row["bundle_bytes"] = rep.bytes_out
        row["net_bytes"] = rep.net_bytes
        from sundae_compress.io.bundle import NET_SECTION, read_bundle

        b = read_bundle(out)
        row["net_stored_bytes"] = sum(x.length for x in b.sections if x.name == NET_SECTION)
        row["gaussian_bytes"] = rep.bytes_out - row["net_stored_bytes"]
        row["finetune"] = rep.finetune
        for key in ("seconds_per_iteration", "peak_count", "test_psnr_decoded", "test_psnr_decoded_before_polish"):
            if key in rep.finetune:
                row[key] = rep.finetune[key]
        row["net_params"] = rep.finetune.get("net_params", 0)
        cand, post = load_for_render(out)
        ev = evaluate(gs, cand, test, postprocess=post)
    row.update({"psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4), "final_count": len(cand),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "load_after": load_avg(), "test_views": len(test)})
    return row


def run_one(scene: str, variant: str, args) -> dict:
    import torch

    from sundae_compress.api import prune_scene, resolve_merge
    from sundae_compress.compensate.onnx_io import export_onnx
    from sundae_compress.compensate.train import finetune
    from sundae_compress.io.bundle import write_bundle
    from sundae_compress.prune.select import resolve_budget

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    gs, cams, train, test, imgs = _scene_setup(scene, args, cache)
    if variant == "cli":
        row = _run_cli(scene, args, gs, test)
        row["train_views"] = len(train)
        return row
    budget = resolve_budget(len(gs), ratio=args.ratio)
    merge = resolve_merge(args.merge, len(gs))
    t0 = time.perf_counter()
    start_ratio = args.continuous_start if variant == "continuous" else args.ratio
    start = prune_scene(gs, ratio=start_ratio, merge=merge)
    t_prune = time.perf_counter() - t0
    row = {"scene": scene, "variant": variant, "n_original": len(gs), "budget": budget, "merge": merge,
           "load_before": load_avg(), "seconds_prune": round(t_prune, 2)}
    net_bytes, net_meta, result = None, None, None
    quant = variant.split("_")[-1] if variant in ("ft_net_none", "ft_net_decode", "ft_net_ste") else args.quantise
    half = args.half
    if variant == "prune":
        final = start
    else:
        from sundae_compress.api import finetune_hooks

        # the cached teacher renders of the orbit training views are passed as "photos": the
        # fixed-view distillation this benchmark has always measured
        kw = dict(cameras=train, images=imgs, iterations=args.iterations, resolution=args.resolution,
                  seed=0, progress=not args.quiet, quantise_aware=quant, polish_iterations=args.polish,
                  hooks=finetune_hooks(merge=merge))
        if variant == "ft":
            kw.update(features=0, net=False)
        else:
            kw.update(features=4 if variant == "ft_net_k4" else args.features, net=True,
                      net_width=args.net_width, net_max_width=args.net_max_width)
            if variant == "ft_net_w16":
                kw.update(net_width=16, net_max_width=40)
                half = False
        if variant == "continuous":
            kw.update(prune_schedule=args.schedule, target_count=budget)
        result = finetune(gs, start, **kw)
        final = result.gaussians
        if result.net is not None:
            net_bytes = export_onnx(result.net, half=half)
            net_meta = result.net_meta()
        row.update({"history": result.history, **{k: v for k, v in result.stats.items()
                                                   if k not in ("prune_events",)},
                    "config": {k: v for k, v in result.config.items() if k != "lrs"}})
    row["seconds_total"] = round(time.perf_counter() - t0, 2)
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / f"{scene}.sundae"
        stats = write_bundle(path, final, net=net_bytes, net_meta=net_meta)
        row["bundle_bytes"] = stats.file_bytes
        from sundae_compress.io.bundle import NET_SECTION

        secs = stats.section_bytes()
        row["net_bytes"] = len(net_bytes) if net_bytes else 0
        row["net_stored_bytes"] = secs.get(NET_SECTION, 0)
        row["net_params"] = result.net.num_params() if result is not None and result.net is not None else 0
        row["net_fp16"] = bool(net_bytes) and half
        row["gaussian_bytes"] = stats.file_bytes - row["net_stored_bytes"]
        p, s, n = _evaluate_bundle(path, test, imgs)
    row.update({"psnr": round(p, 3), "ssim": round(s, 4), "final_count": n,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "load_after": load_avg(), "test_views": len(test), "train_views": len(train)})
    return row


# -- driver -------------------------------------------------------------------------------------------

def _row_line(r, base):
    d = r["psnr"] - base[r["scene"]] if r["scene"] in base else float("nan")
    peak = r.get("peak_count", r["final_count"])
    label = LABELS.get(r["variant"], r["variant"])
    merge = r.get("merge")
    return (f"| {r['scene']} | {label} | {merge if merge is not None else 'assign'} | {peak:,} → {r['final_count']:,} | "
            f"{r['psnr']:.2f} | {d:+.2f} | {r['ssim']:.3f} | {r['bundle_bytes']:,} "
            f"({r['gaussian_bytes']:,} + {r.get('net_stored_bytes', 0):,}) | {r['seconds_total']:.0f} | "
            f"{r.get('seconds_per_iteration', 0):.2f} | {r['peak_rss_mb']:.0f} | {r['load_before']} |")


TABLE_HEAD = ["| scene | variant | merge | Gaussians (peak → final) | held-out PSNR (dB) | Δ vs prune | SSIM | "
              "bundle bytes (Gaussians + stored net) | time (s) | s/iter | peak RSS (MB) | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def _quant_lines(rows):
    q = [r for r in rows if r.get("history") and "test_psnr_decoded" in r]
    if not q:
        return []
    lines = ["| scene | variant | quantise_aware | float | decoded, before polish | decoded, after polish |",
             "|---|---|---|---|---|---|"]
    for r in q:
        h = r["history"]
        joint = [p for p, ph in zip(h["test_psnr"], h["phase"]) if ph == "joint"]
        lines.append(f"| {r['scene']} | {LABELS.get(r['variant'], r['variant'])} | "
                     f"{r.get('config', {}).get('quantise_aware')} | {joint[-1]:.2f} | "
                     f"{r['test_psnr_decoded_before_polish']:.2f} | {r['test_psnr_decoded']:.2f} |")
    return lines


def _sort(rows):
    return sorted(rows, key=lambda r: (r["scene"], list(LABELS).index(r["variant"]) if r["variant"] in LABELS else 99))


def write_reports(rows, meta):
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "finetune.json"
    old, earlier, earlier_meta = [], [], None
    if jpath.exists():
        try:
            data = json.loads(jpath.read_text())
        except ValueError:
            data = {}
        earlier = data.get("earlier", {}).get("rows", [])
        earlier_meta = data.get("earlier", {}).get("meta")
        if data.get("meta", {}).get("config") == meta["config"]:
            old = data.get("rows", [])
        elif data.get("rows"):  # another configuration: keep it, clearly separated, in place of older ones
            earlier, earlier_meta = data["rows"], data.get("meta")
    key = lambda r: (r["scene"], r["variant"])  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in rows})
    allrows = _sort(merged.values())
    out = {"meta": meta, "rows": allrows}
    if earlier:
        out["earlier"] = {"meta": earlier_meta, "rows": earlier,
                          "note": "an earlier configuration (merge=assign, K=4 features, width-16 fp32 net as "
                                  "'ft_net'); not comparable row-for-row with 'rows'"}
    jpath.write_text(json.dumps(out, indent=1))
    c = meta["config"]
    lines = ["# Fine-tuning and neural compensation (ratio 0.1)", "",
             f"Machine: {meta['machine']}. Shared with other jobs; load averages (1/5/15 min) are given per row"
             f" (`uptime` at the start of the run: {meta.get('uptime', '?')}). torch threads: {c['threads']} per "
             f"variant, {meta.get('jobs', 1)} variant(s) run at a time.", "",
             f"Configuration = the pipeline defaults: prune with `api.prune_scene(merge=\"{c['merge']}\")` "
             "(auto → pairwise collapse up to 1.5 M Gaussians, all three scenes here); "
             f"{c['iterations']} iterations at {c['resolution']} px long side, {c['views']} generated orbit views "
             f"(every 8th held out: {meta.get('test_views', 3)} test views), K = {c['features']} feature channels, "
             f"net width {c['net_width']} / max width {c['net_max_width']}, "
             f"{'fp16' if c['half'] else 'fp32'} ONNX weights, quantise_aware {c['quantise']}, net polish "
             f"{c['polish']} iterations on the codec-decoded scene; continuous pruning from ratio "
             f"{c['continuous_start']} with `{c['schedule']}`. Teacher = the original scene's renders. "
             "PSNR/SSIM: held-out views, measured on the written bundle (decoded Gaussians + ONNX net via "
             "onnxruntime) against the original scene. The `CLI default` row is `sundae_compress.compress(ply, "
             "out, ratio=0.1)` with nothing else set (torch threads 1, as in every row; it generates the same 24 cameras itself, renders its own "
             "teacher views, and its time includes reading the PLY, the teacher renders and writing), evaluated "
             "with `api.load_for_render` + `evaluate.evaluate` on the same held-out views.", ""]
    lines += TABLE_HEAD
    base = {r["scene"]: r["psnr"] for r in allrows if r["variant"] == "prune"}
    lines += [_row_line(r, base) for r in allrows]
    lines += ["", "Times (except the CLI row) include pruning, fine-tuning and the net polish; teacher renders are "
              "cached per scene and not included (see `teacher_seconds` in the JSON). Peak RSS is the whole "
              "subprocess (Python + torch + onnxruntime)."]
    q = _quant_lines(allrows)
    if q:
        lines += ["", "## Quantisation consistency", "",
                  "Held-out PSNR (dB) in the trainer: float parameters at the end of the joint phase; the same "
                  "after codec encode/decode (what the bundle stores) before the net-only polish; and after it.",
                  ""] + q
    if meta.get("notes"):
        lines += [""] + [f"* {n}" for n in meta["notes"]]
    if earlier:
        em = earlier_meta or {}
        lines += ["", "## Earlier configuration (kept for reference, not comparable row-for-row)", "",
                  "An earlier run, before the pipeline defaults settled: prune = spectral selection + "
                  "`merge=\"assign\"` (not collapse), K = 4 feature channels, `+ fine-tune + net` = the "
                  "CompensationNet class default (width 16, max width 40, fp32 ONNX), `small fp16 net` = what is now "
                  f"the default net (with K = 4); {em.get('iterations')} iterations, {em.get('resolution')} px, "
                  f"{em.get('views')} views, polish {em.get('polish')}, torch threads {em.get('threads')}. Its "
                  "width-16 vs small-net comparison and the quantisation-consistency / STE comparison are what "
                  "motivated today's defaults.", ""]
        ebase = {r["scene"]: r["psnr"] for r in earlier if r["variant"] == "prune"}
        lines += TABLE_HEAD + [_row_line(dict(r, merge=r.get("merge", "assign")), ebase) for r in _sort(earlier)]
        q = _quant_lines(earlier)
        if q:
            lines += ["", "### Quantisation consistency (earlier configuration)", ""] + q
        if em.get("notes"):
            lines += ["", "Notes from that run:", ""] + [f"* {n}" for n in em["notes"]]
    (RESULTS / "finetune.md").write_text("\n".join(lines) + "\n")


def _run_job(scene, variant, passthrough, cache):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
        out = tf.name
    log = Path(cache) / f"log_{scene}_{variant}.txt"
    cmd = [sys.executable, __file__, *passthrough, "--quiet", "--one", scene, variant, "--out", out]
    print(f"== {scene} / {variant} start (load {load_avg()}), log {log}", flush=True)
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        print(f"   {scene} / {variant} failed with exit code {rc} (see {log})", flush=True)
        return None
    row = json.loads(Path(out).read_text())
    os.unlink(out)
    tfile = Path(cache) / f"{scene}_teacher_seconds.txt"
    if tfile.exists():
        row["teacher_seconds"] = float(tfile.read_text())
    print(f"   {scene} / {variant}: PSNR {row['psnr']:.2f} dB, {row['final_count']:,} Gaussians, "
          f"{row['bundle_bytes']:,} B, {row['seconds_total']:.0f} s", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["guitar", "playbot_125k", "donut"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--quant-compare", metavar="SCENE", help="compare quantise_aware decode / ste / none")
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--merge", default="auto", help="auto (pipeline default), collapse, assign or none")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--features", type=int, default=0)
    ap.add_argument("--polish", type=int, default=150)
    ap.add_argument("--quantise", default="decode")
    ap.add_argument("--net-width", type=int, default=4, help="net width (pipeline default 4)")
    ap.add_argument("--net-max-width", type=int, default=8)
    ap.add_argument("--fp32", dest="half", action="store_false", help="export the net with fp32 weights")
    ap.add_argument("--schedule", default="every=40,share=0.45,stop=0.5")
    ap.add_argument("--continuous-start", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="variants run at a time (each in its own process)")
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / "work" / "finetune_cache"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--one", nargs=2, metavar=("SCENE", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    if args.one:
        row = run_one(args.one[0], args.one[1], args)
        Path(args.out).write_text(json.dumps(row))
        return
    jobs = [(s, v) for s in args.scenes for v in args.variants]
    if args.quant_compare:
        jobs = [(args.quant_compare, f"ft_net_{q}") for q in ("none", "decode", "ste")]
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uptime = load_avg()
    meta = {"machine": f"{os.cpu_count()} CPU cores, {platform.platform()}, python {platform.python_version()}",
            "uptime": uptime, "jobs": args.jobs, "config": {k: getattr(args, k) for k in CONFIG_KEYS},
            "notes": args.note}
    rows = []
    passthrough = [a for a in sys.argv[1:]]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        futs = [pool.submit(_run_job, s, v, passthrough, args.cache) for s, v in jobs]
        for f in futs:
            row = f.result()
            if row is not None:
                rows.append(row)
                write_reports(rows, meta)


if __name__ == "__main__":
    main()
