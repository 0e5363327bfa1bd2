#!/usr/bin/env python
"""GPU path benchmark: gsplat vs our PyTorch renderer, GPU fine-tuning, decode + render FPS.

Needs a CUDA device; gsplat (``pip install -e '.[gpu]'``, it compiles its kernels on first use) for
the parity stage. Without a CUDA device it says so and exits with status 2, writing nothing: there
is no result to fake.

    python benchmarks/bench_gpu.py                                   # every stage, GPU defaults
    python benchmarks/bench_gpu.py --stages parity fps --out /tmp/r  # some stages, elsewhere
    python benchmarks/bench_gpu.py --stages finetune --finetune-budget 40 --append

Stages (each merges its rows into ``OUT/gpu.json`` and rewrites ``OUT/gpu.md``, so a run that is
stopped part-way keeps what it measured; ``--append`` keeps the rows of earlier invocations):

1. ``parity``: the torch backend (on CUDA) against gsplat, same cameras (4 orbit views, 640x480), per
   shared scene: image PSNR and the agreement (cosine similarity, relative L2) of the gradients of a
   fixed weighted sum of the image w.r.t. means / quats / scales / opacities / SH.
2. ``finetune``: ``api.compress(scene, ratio=0.1)`` with fine-tuning on CUDA and the GPU defaults
   (3000 iterations, training images up to 800 px, no net). A short probe first measures seconds
   per iteration; when 3000 iterations would not fit ``--finetune-budget`` seconds, the run is capped
   to what fits and the record says so, with the projected time of the full default. The written
   bundle is scored on the ``near`` / ``novel`` views of :func:`sundae_compress.evaluate.view_sets`
   with the torch renderer (on CUDA; the renderer the CPU figures in generalisation.md use) and,
   when available, with gsplat.
3. ``fps``: the fine-tuned 10 % bundle is decoded and rendered at 1920x1080: render alone, and
   render + the default-size compensation net (untrained weights: the speed of a net does not
   depend on its weights) through PyTorch on CUDA and through onnxruntime (the provider it has).
4. ``tile``: a >= 1 M Gaussian scene made by tiling guitar, compressed at 0.1 with fine-tuning on
   CUDA (teacher pool above 1 M), capped like stage 2 with ``--tile-budget``.

``--dry-run`` runs every stage on the CPU with the torch backend on a few hundred Gaussians per
scene and a handful of iterations, writing nothing unless ``--out`` is given: it checks the
plumbing on a machine without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("parity", "finetune", "fps", "tile")
SCENES = ("donut", "guitar", "playbot_125k")
GRAD_KEYS = ("means", "quats", "scales", "opacities", "sh")
#: parity goals (issue 17): image PSNR torch vs gsplat, gradient cosine similarity
PARITY_DB = 45.0
GRAD_COSINE = 0.99
FPS_GOAL = 100.0
TILE_GOAL_S = 600.0


class Run:
    """Where the bench runs: device, renderer, sizes (the dry run shrinks everything)."""

    def __init__(self, args):
        self.dry = bool(args.dry_run)
        self.device = "cpu" if self.dry else "cuda"
        from sundae_compress.render import available_backends

        self.gsplat = "gsplat" in available_backends()
        self.backend = "gsplat" if self.gsplat else "torch"
        self.subset = 400 if self.dry else None

    def sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def scene(self, name):
        import numpy as np

        from sundae_compress.api import load_scene

        gs = load_scene(ASSETS / f"{name}.ply")
        if self.subset:
            gs = gs.subset(np.random.default_rng(0).choice(len(gs), self.subset, replace=False))
        return gs


def _params(gs, device, requires_grad=False):
    p = gs.to_torch(device=device, requires_grad=requires_grad)
    return {k: v for k, v in p.items() if v is not None}


# -- 1. parity -------------------------------------------------------------------------------------
def parity(run: Run, gs, name, n_views=4, size=(640, 480)):
    import torch

    from sundae_compress.metrics import psnr
    from sundae_compress.render import generate_cameras, render

    other = "gsplat" if run.gsplat else "torch"
    cams = generate_cameras(gs, n=n_views, width=size[0], height=size[1])
    rows = []
    for cam in cams:
        grads, imgs, ms = {}, {}, {}
        for backend in ("torch", other):
            p = _params(gs, run.device, requires_grad=True)
            run.sync()
            t = time.perf_counter()
            out = render(p, cam, backend=backend)
            run.sync()
            ms[backend] = 1000 * (time.perf_counter() - t)
            g = torch.Generator(device="cpu").manual_seed(1)
            w = torch.rand(out.rgb.shape, generator=g).to(out.rgb.device)
            (out.rgb * w).sum().backward()
            imgs[backend] = out.rgb.detach().clamp(0, 1)
            grads[backend] = {k: p[k].grad.detach().flatten() for k in GRAD_KEYS}
        gr = {}
        for k in GRAD_KEYS:
            a, b = grads["torch"][k].double(), grads[other][k].double()
            gr[k] = {"cosine": round(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), 6),
                     "rel_l2": round(float((a - b).norm() / b.norm().clamp_min(1e-30)), 6)}
        rows.append({"view": cam.name, "psnr": round(float(psnr(imgs["torch"], imgs[other])), 3), "grads": gr,
                     "ms_first_render": {k: round(v, 1) for k, v in ms.items()}})
    worst = {k: min(r["grads"][k]["cosine"] for r in rows) for k in GRAD_KEYS}
    return {"scene": name, "gaussians": len(gs), "against": other, "size": list(size), "views": rows,
            "psnr_min": min(r["psnr"] for r in rows), "grad_cosine_min": worst,
            "pass_psnr": min(r["psnr"] for r in rows) >= PARITY_DB,
            "pass_grads": all(v >= GRAD_COSINE for v in worst.values())}


# -- 2. fine-tuning --------------------------------------------------------------------------------
def _probe(run: Run, gs, pruned, iterations):
    """Seconds per training iteration with the defaults (no eval views, no codec polish)."""
    from sundae_compress.compensate.train import finetune

    res = finetune(gs, pruned, device=run.device, backend=run.backend, iterations=iterations, eval_views=0,
                   quantise_aware="none", progress=False, **({"resolution": 64} if run.dry else {}))
    return res.stats["seconds_per_iteration"], res.stats["seconds"]


def _evaluate(run: Run, gs, bundle_path):
    """near / novel PSNR of the written bundle: torch renderer on ``run.device`` (+ gsplat)."""
    from sundae_compress.api import load_for_render
    from sundae_compress.evaluate import _compare, render_views, view_sets

    cand, post = load_for_render(bundle_path)
    sets = view_sets(gs)
    if run.dry:
        sets = {k: [c.scaled(48, 36) for c in v[:3]] for k, v in sets.items()}
    out = {}
    for backend in ["torch"] + (["gsplat"] if run.gsplat else []):
        ref_p, cand_p = _params(gs, run.device), _params(cand, run.device)
        ev = {}
        for set_name, cams in sets.items():
            ref = render_views(ref_p, cams, backend=backend)
            img = render_views(cand_p, cams, backend=backend, postprocess=post)
            r = _compare(gs, cand, cams, ref, img)
            worst = min(r["views"], key=lambda v: v["psnr"])
            ev[set_name] = {"psnr": r["psnr"], "ssim": r["ssim"], "worst": worst["psnr"],
                            "worst_view": worst["name"], "n_views": r["n_views"]}
        out[backend] = ev
    return out


def finetune_scene(run: Run, gs, name, budget_s, work: Path, ratio=0.1, probe_iters=60):
    from sundae_compress.api import compress, prune_scene
    from sundae_compress.compensate.config import GPU_DEFAULTS
    from sundae_compress.io.ply import write_ply

    default_iters = 8 if run.dry else GPU_DEFAULTS["iterations"]
    scene_path = work / f"{name}.ply"
    if run.dry or name.endswith("_tiled"):
        write_ply(gs, scene_path)
    else:
        scene_path = ASSETS / f"{name}.ply"
    pruned = prune_scene(gs, ratio=ratio)
    s_it, probe_s = _probe(run, gs, pruned, 4 if run.dry else probe_iters)
    fits = int(max(budget_s, 0) / max(s_it, 1e-9))
    iters = default_iters if fits >= default_iters else max(fits, 10)
    out_path = work / f"{name}_r{ratio:g}.sundae"
    opts = {"device": run.device, "backend": run.backend, "progress": False}
    if iters != default_iters or run.dry:
        opts["iterations"] = iters
    if run.dry:
        opts["resolution"] = 64
    run.sync()
    t = time.perf_counter()
    rep = compress(scene_path, out_path, ratio=ratio, overwrite=True, finetune_options=opts, evaluate=False)
    run.sync()
    wall = time.perf_counter() - t
    ft = rep.finetune or {}
    per_it = ft.get("seconds_per_iteration") or s_it
    rec = {"scene": name, "gaussians": len(gs), "kept": rep.kept_count, "iterations": ft.get("iterations"),
           "default_iterations": default_iters, "capped": iters != default_iters, "budget_s": budget_s,
           "probe_s_per_iteration": round(s_it, 5), "probe_seconds": round(probe_s, 1),
           "s_per_iteration": per_it, "seconds_finetune": round(rep.stages.get("finetune", float("nan")), 2),
           "seconds_train": ft.get("seconds_train"), "seconds_teacher": ft.get("seconds_teacher"),
           "teacher": ft.get("teacher"), "backend": run.backend,
           "seconds_compress": round(wall, 2), "stages": {k: round(v, 2) for k, v in rep.stages.items()},
           "near_psnr_trainer": ft.get("test_psnr_end"), "bytes": rep.bytes_out}
    other = (rec["seconds_finetune"] or 0) - (ft.get("seconds_train") or 0)
    rec["projected_default_finetune_s"] = round(other + per_it * default_iters, 1)
    rec["projected_default_compress_s"] = round(wall - (ft.get("seconds_train") or 0) + per_it * default_iters, 1)
    rec["bundle"] = str(out_path)
    return rec


# -- 3. FPS ----------------------------------------------------------------------------------------
_NET: dict = {}


def fps(run: Run, gs, name, bundle_path, frames=100, size=(1920, 1080)):
    import torch

    from sundae_compress.compensate.infer import make_postprocess
    from sundae_compress.compensate.onnx_io import OnnxCompensator, _default_providers, export_onnx
    from sundae_compress.compensate.unet import CompensationNet
    from sundae_compress.io.bundle import read_bundle
    from sundae_compress.render import render
    from sundae_compress.render.cameras import novel_views

    if run.dry:
        size, frames = (64, 36), 2
    t = time.perf_counter()
    b = read_bundle(bundle_path)
    p = _params(b.gaussians, run.device)
    run.sync()
    decode_s = time.perf_counter() - t
    cam = novel_views(gs, size=size)[0]
    if "net" not in _NET:                    # one net (and one ONNX export) for every scene
        torch.manual_seed(0)
        net = CompensationNet(3)             # the default --net architecture
        for m in net.modules():              # untrained weights, but not the zero-initialised head
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, std=0.05)
        net.eval()
        _NET["net"], _NET["onnx"] = net, export_onnx(net, half=True)
    net = _NET["net"]
    onnx = OnnxCompensator(_NET["onnx"], providers=_default_providers())
    posts = {"render": None, "render+net (torch, CUDA)" if run.device == "cuda" else "render+net (torch)":
             make_postprocess(net.to(run.device), 0),
             f"render+net (onnxruntime {onnx.providers[0]})": make_postprocess(onnx, 0)}
    rows = []
    with torch.no_grad():
        for label, post in posts.items():
            slow = "onnxruntime" in label and "CUDA" not in onnx.providers[0]   # the host-CPU net
            n = max(frames // 20, 2) if slow else frames

            def frame():
                out = render(p, cam, backend=run.backend)
                return out.rgb if post is None else post(out)

            for _ in range(1 if slow else 3):
                frame()
            run.sync()
            t = time.perf_counter()
            for _ in range(n):
                frame()
            run.sync()
            dt = (time.perf_counter() - t) / n
            rows.append({"pipeline": label, "frames": n, "ms_per_frame": round(1000 * dt, 3), "fps": round(1 / dt, 1)})
    return {"scene": name, "kept": len(b.gaussians), "decode_seconds": round(decode_s, 3), "size": list(size),
            "backend": run.backend, "onnx_providers": onnx.providers, "net_params": net.num_params(),
            "rows": rows, "net_note": "default CompensationNet(3) with untrained weights: speed only"}


# -- 4. >= 1 M tiling ------------------------------------------------------------------------------
def tile(gs, n_target):
    import numpy as np

    from sundae_compress.gaussians import GaussianSet

    reps = int(np.ceil(n_target / len(gs)))
    side = int(np.ceil(reps ** (1 / 3)))
    lo, hi = gs.bounds()
    ext = (hi - lo) * 1.05
    parts = []
    for i in range(reps):
        off = np.array([i % side, (i // side) % side, i // (side * side)]) * ext
        parts.append(gs.replace(means=gs.means + off.astype(np.float32)))
    return GaussianSet.concat(parts).subset(np.arange(n_target))


# -- results ---------------------------------------------------------------------------------------
def _cpu_default_novel():
    """The CPU default's novel / worst PSNR per scene at 0.1 (generalisation.json, config "new")."""
    try:
        runs = json.loads((RESULTS / "generalisation.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return {}
    return {r["scene"]: r["eval"]["novel"] for r in runs
            if r.get("config") == "new" and r.get("ratio") == 0.1 and r.get("eval", {}).get("novel")}


def environment(run: Run) -> dict:
    import torch

    env = {"device": torch.cuda.get_device_name(0) if run.device == "cuda" else "cpu (dry run)",
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "platform": platform.platform(), "cpus": os.cpu_count(), "backend": run.backend}
    try:
        import gsplat

        env["gsplat"] = gsplat.__version__
    except Exception as e:  # not installed or its CUDA build failed
        env["gsplat"] = f"unavailable ({type(e).__name__})"
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except Exception:
        pass
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                        "--format=csv,noheader"], capture_output=True, text=True,
                                       timeout=20).stdout.strip()
    except Exception:
        pass
    return env


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def write_results(data: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.json").write_text(json.dumps(data, indent=2))
    env = data.get("env", {})
    L = [f"# GPU path on {env.get('device', '?')}", "",
         f"Device: {env.get('driver', env.get('device'))}; {env.get('cpus')} CPUs; {env.get('platform')}. "
         f"python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('cuda')}), gsplat {env.get('gsplat')}, "
         f"onnxruntime {env.get('onnxruntime')} (providers: {', '.join(env.get('onnxruntime_providers', []))}). "
         f"Rasteriser for fine-tuning and FPS: {env.get('backend')}.", ""]
    L += [f"- {n}" for n in data.get("notes", [])]
    if data.get("notes"):
        L.append("")
    if data.get("parity"):
        L += ["## Parity: our PyTorch renderer (on CUDA) vs gsplat", "",
              f"4 orbit views at 640x480 per scene; gradients of sum(w * image) for a fixed random w. "
              f"Goals: PSNR >= {PARITY_DB:g} dB, gradient cosine >= {GRAD_COSINE:g}.", "",
              "| scene | Gaussians | PSNR min (dB) | cos means | cos quats | cos scales | cos opacities | cos SH | "
              "rel L2 max (means / opac. / SH) | met |", "|---|---|---|---|---|---|---|---|---|---|"]
        for p in data["parity"]:
            c = p["grad_cosine_min"]
            rl = {k: max(v["grads"][k]["rel_l2"] for v in p["views"]) for k in GRAD_KEYS}
            L.append(f"| {p['scene']} | {p['gaussians']:,} | {p['psnr_min']:.2f} | " +
                     " | ".join(f"{c[k]:.4f}" for k in GRAD_KEYS) +
                     f" | {rl['means']:.3f} / {rl['opacities']:.3f} / {rl['sh']:.3f} | "
                     f"{'yes' if p['pass_psnr'] and p['pass_grads'] else 'NO'} |")
        L.append("")
    cpu = _cpu_default_novel()
    ft = data.get("finetune", [])
    if ft:
        L += ["## Fine-tuning on the GPU at 10 % (GPU defaults: 3000 iterations, up to 800 px, no net)", "",
              "Seconds are `api.compress` stages on the device (prune runs on its CPU). *capped*: the run used "
              "fewer iterations than the default to fit the lease; *projected* = the other fine-tuning "
              "costs + measured s/iteration x 3000. Novel / near PSNR: the written bundle vs the original, "
              "torch renderer on CUDA (same renderer as the CPU figures); CPU default from "
              "generalisation.md (400 iterations at up to 400 px).", "",
              "| scene | Gaussians -> kept | iterations | s/iter | fine-tune s | projected 3000-iter s | "
              "novel PSNR (worst) | near PSNR | gsplat-rendered novel | CPU default novel (worst) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in ft:
            ev = r.get("eval", {})
            t, g = ev.get("torch", {}), ev.get("gsplat", {})
            c = cpu.get(r["scene"])
            L.append(f"| {r['scene']} | {r['gaussians']:,} -> {r['kept']:,} | {r['iterations']}"
                     f"{' (capped)' if r['capped'] else ''} | {r['s_per_iteration']:.4f} | {r['seconds_finetune']:.1f} | "
                     f"{r['projected_default_finetune_s']:.1f} | "
                     + (f"{t['novel']['psnr']:.2f} ({t['novel']['worst']:.2f}) | {t['near']['psnr']:.2f}" if t else "- | -")
                     + f" | {_f(g.get('novel', {}).get('psnr'))} | "
                     + (f"{c['psnr']:.2f} ({c['worst']:.2f})" if c else "not measured") + " |")
        L.append("")
    if data.get("fps"):
        L += ["## Decode + render at 1920x1080", "",
              f"Goal: >= {FPS_GOAL:g} FPS for a 10 % scene. The net is the default `--net` architecture with "
              "untrained weights (speed does not depend on the weights); onnxruntime gets and returns host "
              "arrays (one device round trip per frame).", "",
              "| scene | kept | decode s | pipeline | ms / frame | FPS |", "|---|---|---|---|---|---|"]
        for f in data["fps"]:
            for row in f["rows"]:
                L.append(f"| {f['scene']} | {f['kept']:,} | {f['decode_seconds']:.2f} | {row['pipeline']} | "
                         f"{row['ms_per_frame']:.2f} | {row['fps']:.1f} |")
        L.append("")
    if data.get("tile"):
        L += [f"## >= 1 M Gaussians (guitar tiled), 10 %: goal <= {TILE_GOAL_S:.0f} s", "",
              "| scene | Gaussians -> kept | teacher | iterations | s/iter | fine-tune s | projected 3000-iter s | "
              "compress s (projected) |", "|---|---|---|---|---|---|---|---|"]
        for r in data["tile"]:
            L.append(f"| {r['scene']} | {r['gaussians']:,} -> {r['kept']:,} | {r['teacher']} | {r['iterations']}"
                     f"{' (capped)' if r['capped'] else ''} | {r['s_per_iteration']:.4f} | {r['seconds_finetune']:.1f} | "
                     f"{r['projected_default_finetune_s']:.1f} | {r['seconds_compress']:.1f} "
                     f"({r['projected_default_compress_s']:.1f}) |")
        L.append("")
    for k in ("errors",):
        if data.get(k):
            L += ["## Errors", ""] + [f"- {e}" for e in data[k]] + [""]
    (out_dir / "gpu.md").write_text("\n".join(L))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", nargs="+", default=list(SCENES))
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--work", type=Path, default=None, help="folder for bundles (default: a temporary one)")
    ap.add_argument("--append", action="store_true", help="merge into an existing OUT/gpu.json")
    ap.add_argument("--finetune-budget", type=float, default=600.0,
                    help="training seconds allowed per scene; fewer iterations than the default when it does not fit")
    ap.add_argument("--tile-count", type=int, default=1_048_576)
    ap.add_argument("--tile-budget", type=float, default=600.0)
    ap.add_argument("--fps-frames", type=int, default=100)
    ap.add_argument("--note", action="append", default=[], help="a line for the result's notes")
    ap.add_argument("--dry-run", action="store_true", help="CPU, torch backend, tiny sizes: plumbing check only")
    args = ap.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("bench_gpu: not run: no CUDA device. This benchmark needs a CUDA GPU "
              "(and gsplat, pip install -e '.[gpu]', for the parity stage).", file=sys.stderr)
        return 2
    if args.dry_run and args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench_gpu_dry_"))
    out_dir = args.out or RESULTS
    run = Run(args)
    data = {}
    if args.append and (out_dir / "gpu.json").is_file():
        data = json.loads((out_dir / "gpu.json").read_text())
    data["env"] = environment(run)
    data.setdefault("notes", [])
    data["notes"] += [n for n in args.note if n not in data["notes"]]
    data.setdefault("errors", [])
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    work.mkdir(parents=True, exist_ok=True)

    def put(key, rec):
        rows = [r for r in data.get(key, []) if r["scene"] != rec["scene"]]
        data[key] = rows + [rec]
        write_results(data, out_dir)
        print(f"bench_gpu: {key} {rec['scene']}: " + json.dumps({k: v for k, v in rec.items() if k != "views"})[:1500],
              flush=True)

    def guarded(what, fn):
        try:
            return fn()
        except Exception as e:  # keep the other stages' results; say what broke
            import traceback

            traceback.print_exc()
            data["errors"].append(f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            write_results(data, out_dir)
            return None

    write_results(data, out_dir)
    if "parity" in args.stages and not run.gsplat and not run.dry:
        data["errors"].append("parity: gsplat unavailable, nothing to compare against")
    for name in args.scenes:
        gs = run.scene(name)
        if "parity" in args.stages and (run.gsplat or run.dry):
            rec = guarded(f"parity {name}", lambda: parity(run, gs, name))
            if rec:
                put("parity", rec)
        rec = None
        if "finetune" in args.stages or "fps" in args.stages:
            rec = guarded(f"finetune {name}", lambda: finetune_scene(run, gs, name, args.finetune_budget, work))
            if rec:
                rec["eval"] = guarded(f"evaluate {name}", lambda: _evaluate(run, gs, rec["bundle"])) or {}
                put("finetune", rec)
        if "fps" in args.stages and rec:
            f = guarded(f"fps {name}", lambda: fps(run, gs, name, rec["bundle"], frames=args.fps_frames))
            if f:
                put("fps", f)
    if "tile" in args.stages:
        def _tile():
            base = run.scene("guitar")
            n = 4000 if run.dry else args.tile_count
            big = tile(base, n)
            return finetune_scene(run, big, "guitar_tiled", args.tile_budget, work)

        rec = guarded("tile", _tile)
        if rec:
            rec["goal_met_projected"] = rec["projected_default_compress_s"] <= TILE_GOAL_S
            put("tile", rec)
    write_results(data, out_dir)
    print(f"bench_gpu: results in {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
