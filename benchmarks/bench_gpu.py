#!/usr/bin/env python
"""GPU path benchmark: gsplat vs our PyTorch renderer, GPU fine-tuning time, CUDA decode + render FPS.

Needs a CUDA device and ``pip install -e '.[gpu]'`` (gsplat compiles its kernels on first use).
Without them it says so and exits with status 2, writing nothing: there is no result to fake.

    python benchmarks/bench_gpu.py [--scenes donut guitar playbot_125k] [--tile-million] [--skip-finetune]

Writes benchmarks/results/gpu.json and gpu.md:
1. parity: PSNR of the torch backend (on CUDA) against gsplat, same camera, per shared scene, and
   the agreement of the gradients w.r.t. means / opacities / SH (cosine similarity, relative L2);
2. fine-tuning at ratio 0.1 with the GPU defaults: seconds and held-out PSNR per scene, plus a
   ≥ 1 M Gaussian scene made by tiling a shared one (goal: ≤ 10 minutes on one H100);
3. decode + render with the compensation net through onnxruntime's CUDA provider at 1920×1080:
   frames per second for the 10 % scene (goal ≥ 100 FPS).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results"


def _require_gpu():
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import gsplat  # noqa: F401
    except Exception as e:  # not installed, or its kernels failed to build
        return f"gsplat unavailable ({type(e).__name__}: {e})"
    return None


def _sync():
    import torch

    torch.cuda.synchronize()


def parity(gs, name, n_views=4, size=(640, 480)):
    import torch

    from sundae_compress.metrics import psnr
    from sundae_compress.render import generate_cameras, render

    cams = generate_cameras(gs, n=n_views, width=size[0], height=size[1])
    rows = []
    for cam in cams:
        grads = {}
        imgs = {}
        for backend in ("torch", "gsplat"):
            p = gs.to_torch(device="cuda", requires_grad=True)
            out = render(p, cam, backend=backend)
            w = torch.linspace(0, 1, out.rgb.numel(), device="cuda").reshape(out.rgb.shape)
            (out.rgb * w).sum().backward()
            imgs[backend] = out.rgb.detach().clamp(0, 1)
            grads[backend] = {k: p[k].grad.detach().flatten() for k in ("means", "opacities", "sh")}
        g = {}
        for k in ("means", "opacities", "sh"):
            a, b = grads["torch"][k], grads["gsplat"][k]
            g[k] = {"cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
                    "rel_l2": float((a - b).norm() / b.norm().clamp_min(1e-12))}
        rows.append({"view": cam.name, "psnr": float(psnr(imgs["torch"], imgs["gsplat"])), "grads": g})
    return {"scene": name, "views": rows, "psnr_min": min(r["psnr"] for r in rows)}


def finetune_timing(gs, name):
    from sundae_compress.api import prune_scene
    from sundae_compress.compensate.train import finetune

    pruned = prune_scene(gs, ratio=0.1)
    _sync()
    t = time.perf_counter()
    res = finetune(gs, pruned, device="cuda", net=True, features=4, progress=True)
    _sync()
    s = res.summary()
    return {"scene": name, "gaussians": len(gs), "kept": len(pruned), "seconds": time.perf_counter() - t,
            "test_psnr": s.get("test_psnr_end"), "iterations": s.get("iterations"), "result": res}


def decode_render_fps(res, name, frames=100, size=(1920, 1080)):
    import numpy as np
    import torch

    from sundae_compress.compensate.onnx_io import OnnxCompensator, export_onnx
    from sundae_compress.io.bundle import read_bundle, write_bundle
    from sundae_compress.render import render

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.sundae"
        onnx = export_onnx(res.net) if res.net is not None else None
        write_bundle(path, res.gaussians, net=onnx, net_meta=res.net_meta())
        t = time.perf_counter()
        b = read_bundle(path)
        decode_s = time.perf_counter() - t
    comp = OnnxCompensator(b.net, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]) if b.net else None
    p = b.gaussians.to_torch(device="cuda")
    feats = p.get("features")
    cam = res.eval_cameras[0].scaled(*size)

    def frame():
        out = render(p, cam, features=feats, backend="gsplat")
        x = out.rgb if feats is None else torch.cat([out.rgb, out.features], -1)
        return comp(x) if comp is not None else x

    for _ in range(5):
        frame()
    _sync()
    t = time.perf_counter()
    for _ in range(frames):
        frame()
    _sync()
    dt = (time.perf_counter() - t) / frames
    return {"scene": name, "decode_seconds": decode_s, "fps": 1.0 / dt, "ms_per_frame": 1000 * dt,
            "size": list(size), "net": comp is not None, "providers": comp.providers if comp else None,
            "note": "the net runs through onnxruntime with a host round trip per frame (numpy in/out)"}


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", nargs="+", default=["donut", "guitar", "playbot_125k"])
    ap.add_argument("--tile-million", action="store_true", help="also fine-tune a 1 M Gaussian tiled scene")
    ap.add_argument("--skip-finetune", action="store_true")
    args = ap.parse_args(argv)
    why = _require_gpu()
    if why:
        print(f"bench_gpu: not run: {why}. This benchmark needs a CUDA GPU with gsplat "
              f"(pip install -e '.[gpu]').", file=sys.stderr)
        return 2
    import torch

    from sundae_compress.io.ply import read_ply

    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "python": platform.python_version(), "parity": [], "finetune": [], "fps": []}
    for name in args.scenes:
        gs = read_ply(ASSETS / f"{name}.ply")
        out["parity"].append(parity(gs, name))
        print(json.dumps(out["parity"][-1]), flush=True)
        if not args.skip_finetune:
            ft = finetune_timing(gs, name)
            out["fps"].append(decode_render_fps(ft.pop("result"), name))
            out["finetune"].append(ft)
            print(json.dumps(ft), json.dumps(out["fps"][-1]), flush=True)
    if args.tile_million and not args.skip_finetune:
        big = tile(read_ply(ASSETS / "guitar.ply"), 1_000_000)
        ft = finetune_timing(big, "guitar_tiled_1M")
        ft.pop("result")
        out["finetune"].append(ft)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu.json").write_text(json.dumps(out, indent=2))
    lines = [f"# GPU path ({out['device']})", "", "| scene | torch vs gsplat PSNR (min over views) |", "|---|---|"]
    lines += [f"| {p['scene']} | {p['psnr_min']:.2f} dB |" for p in out["parity"]]
    lines += ["", "| scene | Gaussians | fine-tune s | held-out PSNR |", "|---|---|---|---|"]
    lines += [f"| {f['scene']} | {f['gaussians']:,} | {f['seconds']:.1f} | {f['test_psnr']} |" for f in out["finetune"]]
    lines += ["", "| scene | decode s | FPS at 1920x1080 (render + net) |", "|---|---|---|"]
    lines += [f"| {f['scene']} | {f['decode_seconds']:.2f} | {f['fps']:.1f} |" for f in out["fps"]]
    (RESULTS / "gpu.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
