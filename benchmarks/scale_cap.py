"""The scale cap of fine-tuning (issue 11, ``FinetuneConfig.max_scale_quantile`` / ``max_scale_growth``).

Three steps, PSNR measurements only (no timing: run them without the benchmark lock):

    python benchmarks/scale_cap.py compress SCENE.ply OUT.sundae '{"max_scale_quantile": 0.999}'
        # = sundae-compress SCENE.ply --ratio 0.1 with those FinetuneConfig fields; prints the
        #   bundle's novel / near figures (the same as sundae-eval's) as JSON
    python benchmarks/scale_cap.py knot DEMO_SCENE.ply name=BUNDLE ... [prune=BUNDLE]
        # the demo's worst view (novel_el+25_az320_d2.8): view PSNR, PSNR on the knot's pixels
        #   (where the original's knot alone, radius < 2.4, is brighter than 0.05), the knot's mean
        #   saturation (max - min channel), the knot alone, the detail region's Gaussians, and the
        #   share of knot pixels worse / better than prune-only (> 2/255 mean absolute error)
    python benchmarks/scale_cap.py png OUT_DIR default prune capped
        # demo_cap.png (original | default | capped) and demo_cap_error.png from the last knot run

Findings: ``benchmarks/results/worst_views.md`` ("The scale cap"), figures: ``scale_cap.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RENDERS = ROOT / "benchmarks" / "work" / "scale_cap_renders.npz"


def compress_one(scene: str, out: str, opts: str) -> dict:
    import torch

    from sundae_compress.api import compress

    torch.set_num_threads(1)
    opts = json.loads(opts)
    t = time.time()
    r = compress(scene, out, ratio=0.1, overwrite=True, finetune_options={**opts, "threads": 1, "progress": False})
    return {"scene": scene, "opts": opts, "out": out, "wall": round(time.time() - t), "fidelity": r.fidelity}


def knot(src: str, *pairs: str) -> dict:
    import torch

    from benchmarks.worst_views import WORST
    from sundae_compress.api import evaluation_views, load_for_render, load_scene
    from sundae_compress.evaluate import render_views

    torch.set_num_threads(1)
    src = Path(src)
    bundles = dict(a.split("=", 1) for a in pairs)
    gs = load_scene(src)
    _, novel, _ = evaluation_views(gs, src)
    cam = [c for c in novel if c.name == WORST["demo"]]
    ref = render_views(gs, cam)[0]
    knot_ref = render_views(gs.subset(np.nonzero(np.linalg.norm(gs.means, axis=1) < 2.4)[0]), cam)[0]
    mask = knot_ref.max(2) > 0.05

    def ps(a, b, m=None):
        d = (a - b) ** 2
        return round(float(10 * np.log10(1 / max(float(d[m].mean() if m is not None else d.mean()), 1e-12))), 2)

    def sat(im):
        return round(float((im.max(2) - im.min(2))[mask].mean()), 3)

    out = {"view": WORST["demo"], "knot_pixel_share": round(float(mask.mean()), 3), "original_knot_saturation": sat(ref)}
    imgs = {}
    for name, path in bundles.items():
        g, post = load_for_render(path)
        im = imgs[name] = render_views(g, cam, postprocess=post)[0]
        r = np.linalg.norm(g.means, axis=1)
        op = 1 / (1 + np.exp(-g.opacities.reshape(-1)))
        big = np.exp(g.scales).max(1)
        m = (r >= 2.4) & (r < 7.0)
        alone = render_views(g.subset(np.nonzero(r < 2.4)[0]), cam)[0]
        out[name] = {"view_psnr": ps(im, ref), "knot_pixels_psnr": ps(im, ref, mask), "knot_alone_psnr": ps(alone, knot_ref),
                     "knot_saturation": sat(im), "signed_rgb_on_knot": [round(float(v), 3) for v in (im - ref)[mask].mean(0)],
                     "detail": {"count": int(m.sum()), "median_opacity": round(float(np.median(op[m])), 3),
                                "median_largest_axis": round(float(np.median(big[m])), 3),
                                "p90_largest_axis": round(float(np.quantile(big[m], 0.9)), 3)}}
    if "prune" in imgs:
        eb = np.abs(imgs["prune"] - ref).mean(2)
        for name, im in imgs.items():
            ea = np.abs(im - ref).mean(2)
            out[name]["knot_pixels_worse_than_prune"] = round(float((ea > eb + 2 / 255)[mask].mean()), 3)
            out[name]["knot_pixels_better_than_prune"] = round(float((eb > ea + 2 / 255)[mask].mean()), 3)
    RENDERS.parent.mkdir(parents=True, exist_ok=True)
    np.savez(RENDERS, original=ref, **imgs)
    return out


def png(out_dir: str, default: str, prune: str, capped: str) -> dict:
    import torch

    from benchmarks.worst_views import comparison_map, save_small
    from sundae_compress.evaluate import contact_sheet
    from sundae_compress.io.images import label_columns
    from sundae_compress.metrics import psnr

    a = np.load(RENDERS)
    ref, d, p, c = a["original"], a[default], a[prune], a[capped]

    def db(x):
        return float(psnr(torch.from_numpy(x), torch.from_numpy(ref)))

    top = label_columns(contact_sheet([ref, d, c], cols=3), ("original: demo novel_el+25_az320_d2.8",
                        f"{default}: {db(d):.2f} dB", f"{capped}: {db(c):.2f} dB"))
    bot = label_columns(contact_sheet([comparison_map(ref, c, d), comparison_map(ref, c, p), p], cols=3),
                        (f"{capped} vs {default} (green: {capped} better)", f"{capped} vs prune-only (green: {capped} better)",
                         f"prune-only: {db(p):.2f} dB"))
    out = Path(out_dir)
    return {"scales": [save_small(out / "demo_cap.png", top), save_small(out / "demo_cap_error.png", bot, palette=True)]}


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    print(json.dumps({"compress": compress_one, "knot": knot, "png": png}[cmd](*rest), indent=1, default=str))
