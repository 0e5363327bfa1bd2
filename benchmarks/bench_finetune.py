"""Benchmark: what fine-tuning and neural compensation buy over pruning alone.

For each scene at ratio 0.1, on generated orbit cameras (every 8th view held out), with the
default CPU fine-tuning budget unless overridden:

* ``prune``        spectral selection + merge, no training
* ``ft``           + fine-tuning of the Gaussians (distillation from the original scene)
* ``ft_net``       + K feature channels per Gaussian and the compensation U-Net (full method),
                   the CompensationNet default size (width 16, max width 40, fp32 ONNX)
* ``ft_net_small`` the same with the small net (width 8, max width 16, fp16 ONNX weights)
* ``continuous``   full method (default-size net), pruning continuously during fine-tuning
                   (from ratio 0.3)
* ``ft_net_ste``   (``--variants ft_net_ste``) quantisation-aware variant: STE instead of decode

Every variant is measured through the file it produces: the Gaussians (and ONNX net) are written
with ``write_bundle``, read back, rendered, passed through the ONNX net with onnxruntime and
compared with the original scene's renders on the held-out views (PSNR, SSIM). Each variant runs in
its own subprocess so that its peak memory (max RSS) is its own; teacher renders are cached per scene.

    python benchmarks/bench_finetune.py --scenes guitar donut playbot_125k
    python benchmarks/bench_finetune.py --quant-compare guitar   # decode-polish vs STE

Results: benchmarks/results/finetune.json and finetune.md (merged with earlier runs, per scene).
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
VARIANTS = ("prune", "ft", "ft_net", "ft_net_small", "continuous")
LABELS = {"prune": "prune only (spectral + merge)", "ft": "+ fine-tune", "ft_net": "+ fine-tune + net",
          "ft_net_small": "+ fine-tune + small fp16 net",
          "continuous": "continuous pruning + net", "ft_net_decode": "+ fine-tune + net, decode polish",
          "ft_net_ste": "+ fine-tune + net, STE + decode polish", "ft_net_none": "+ fine-tune + net, no quant step"}


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


def run_one(scene: str, variant: str, args) -> dict:
    import torch

    from sundae_compress.compensate.onnx_io import export_onnx
    from sundae_compress.compensate.train import finetune
    from sundae_compress.io.bundle import write_bundle
    from sundae_compress.prune.merge import prune
    from sundae_compress.prune.select import resolve_budget

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    gs, cams, train, test, imgs = _scene_setup(scene, args, cache)
    budget = resolve_budget(len(gs), ratio=args.ratio)
    t0 = time.perf_counter()
    start_ratio = args.continuous_start if variant == "continuous" else args.ratio
    start = prune(gs, resolve_budget(len(gs), ratio=start_ratio), method="spectral", merge="assign")
    t_prune = time.perf_counter() - t0
    row = {"scene": scene, "variant": variant, "n_original": len(gs), "budget": budget,
           "load_before": load_avg(), "seconds_prune": round(t_prune, 2)}
    net_bytes, net_meta, result = None, None, None
    quant = variant.split("_")[-1] if variant in ("ft_net_none", "ft_net_decode", "ft_net_ste") else args.quantise
    small = variant == "ft_net_small"
    if variant == "prune":
        final = start
    else:
        kw = dict(cameras=cams, images=imgs, iterations=args.iterations, resolution=args.resolution,
                  views=args.views, seed=0, progress=not args.quiet, quantise_aware=quant,
                  polish_iterations=args.polish)
        if variant == "ft":
            kw.update(features=0, net=False)
        else:
            kw.update(features=args.features, net=True)
            if small:
                kw.update(net_width=args.small_width, net_max_width=args.small_max_width)
            else:
                kw.update(net_width=args.net_width, net_max_width=args.net_max_width)
        if variant == "continuous":
            kw.update(prune_schedule=args.schedule, target_count=budget, merge="assign")
        result = finetune(gs, start, **kw)
        final = result.gaussians
        if result.net is not None:
            net_bytes = export_onnx(result.net, half=small)
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
        row["gaussian_bytes"] = stats.file_bytes - row["net_stored_bytes"]
        p, s, n = _evaluate_bundle(path, test, imgs)
    row.update({"psnr": round(p, 3), "ssim": round(s, 4), "final_count": n,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "load_after": load_avg(), "test_views": len(test), "train_views": len(train)})
    return row


# -- driver -------------------------------------------------------------------------------------------

def write_reports(rows, meta):
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "finetune.json"
    old = []
    if jpath.exists():
        try:
            old = json.loads(jpath.read_text()).get("rows", [])
        except ValueError:
            old = []
    key = lambda r: (r["scene"], r["variant"])  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in rows})
    allrows = sorted(merged.values(), key=lambda r: (r["scene"], list(LABELS).index(r["variant"])
                                                      if r["variant"] in LABELS else 99))
    jpath.write_text(json.dumps({"meta": meta, "rows": allrows}, indent=1))
    lines = ["# Fine-tuning and neural compensation (ratio 0.1)", "",
             f"Machine: {meta['machine']}. Shared with other jobs; load averages (1/5/15 min) are given per row. "
             f"torch threads: {meta['threads']}.", "",
             f"Budget: {meta['iterations']} iterations at {meta['resolution']} px long side, {meta['views']} generated "
             f"orbit views (every 8th held out), K = {meta['features']} feature channels, net polish "
             f"{meta['polish']} iterations on the codec-decoded scene. Teacher = the original scene's renders. "
             "PSNR/SSIM: held-out views, measured on the written bundle (decoded Gaussians + ONNX net via "
             "onnxruntime) against the original scene.", "",
             "| scene | variant | Gaussians (peak → final) | held-out PSNR (dB) | Δ vs prune | SSIM | bundle bytes "
             "(Gaussians + stored net) | time (s) | s/iter | peak RSS (MB) | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["scene"]: r["psnr"] for r in allrows if r["variant"] == "prune"}
    for r in allrows:
        d = r["psnr"] - base[r["scene"]] if r["scene"] in base else float("nan")
        peak = r.get("peak_count", r["final_count"])
        lines.append(f"| {r['scene']} | {LABELS.get(r['variant'], r['variant'])} | {peak:,} → {r['final_count']:,} | "
                     f"{r['psnr']:.2f} | {d:+.2f} | {r['ssim']:.3f} | {r['bundle_bytes']:,} "
                     f"({r['gaussian_bytes']:,} + {r.get('net_stored_bytes', 0):,}) | {r['seconds_total']:.0f} | "
                     f"{r.get('seconds_per_iteration', 0):.2f} | {r['peak_rss_mb']:.0f} | {r['load_before']} |")
    lines += ["", "Times include pruning, fine-tuning and the net polish (teacher renders are cached per scene and "
              "not included; see `teacher_seconds` in the JSON). Peak RSS is the whole subprocess (Python + torch "
              "+ onnxruntime)."]
    q = [r for r in allrows if r.get("history") and "test_psnr_decoded" in r]
    if q:
        lines += ["", "## Quantisation consistency", "",
                  "Held-out PSNR (dB) in the trainer: float parameters at the end of the joint phase; the same "
                  "after codec encode/decode (what the bundle stores) before the net-only polish; and after it.",
                  "", "| scene | variant | quantise_aware | float | decoded, before polish | decoded, after polish |",
                  "|---|---|---|---|---|---|"]
        for r in q:
            h = r["history"]
            joint = [p for p, ph in zip(h["test_psnr"], h["phase"]) if ph == "joint"]
            lines.append(f"| {r['scene']} | {LABELS.get(r['variant'], r['variant'])} | "
                         f"{r.get('config', {}).get('quantise_aware')} | {joint[-1]:.2f} | "
                         f"{r['test_psnr_decoded_before_polish']:.2f} | {r['test_psnr_decoded']:.2f} |")
    if meta.get("notes"):
        lines += [""] + [f"* {n}" for n in meta["notes"]]
    (RESULTS / "finetune.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["guitar", "donut", "playbot_125k"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--quant-compare", metavar="SCENE", help="compare quantise_aware decode / ste / none")
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--polish", type=int, default=150)
    ap.add_argument("--quantise", default="decode")
    ap.add_argument("--net-width", type=int, default=16, help="width of the (default-size) net variants")
    ap.add_argument("--net-max-width", type=int, default=40)
    ap.add_argument("--small-width", type=int, default=8)
    ap.add_argument("--small-max-width", type=int, default=16)
    ap.add_argument("--schedule", default="every=40,share=0.45,stop=0.5")
    ap.add_argument("--continuous-start", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
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
    meta = {"machine": f"{os.cpu_count()} CPU cores, {platform.platform()}, python {platform.python_version()}",
            "threads": args.threads, "iterations": args.iterations, "resolution": args.resolution,
            "views": args.views, "features": args.features, "polish": args.polish, "ratio": args.ratio,
            "schedule": args.schedule, "continuous_start": args.continuous_start, "notes": args.note}
    rows = []
    passthrough = [a for a in sys.argv[1:]]
    for scene, variant in jobs:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            out = tf.name
        cmd = [sys.executable, __file__, *passthrough, "--one", scene, variant, "--out", out]
        print(f"== {scene} / {variant} (load {load_avg()})", flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"   failed with exit code {rc}", flush=True)
            continue
        row = json.loads(Path(out).read_text())
        os.unlink(out)
        tfile = Path(args.cache) / f"{scene}_teacher_seconds.txt"
        if tfile.exists():
            row["teacher_seconds"] = float(tfile.read_text())
        rows.append(row)
        print(f"   PSNR {row['psnr']:.2f} dB, {row['final_count']:,} Gaussians, {row['bundle_bytes']:,} B, "
              f"{row['seconds_total']:.0f} s", flush=True)
        write_reports(rows, meta)


if __name__ == "__main__":
    main()
