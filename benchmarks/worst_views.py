"""Look at the worst novel view of each scene (issue 11: "look at the images too, not only the numbers").

For each scene, the original, the default bundle (``sundae-compress X --ratio 0.1``) and the
prune-only bundle (``--no-finetune``) are rendered at the scene's worst novel view of the default
(``benchmarks/results/generalisation.md``), with the views ``sundae-eval`` uses
(:func:`sundae_compress.api.evaluation_views`: the frame comes from the scene's cameras.json when
there is one). One PNG per scene, two rows of three 480x360 panels:

    original            | default bundle        | prune-only bundle
    fine-tune vs prune  | error default x4      | error prune-only x4

"fine-tune vs prune" is green where the default's error is lower than prune-only's, red where it is
higher (mean absolute error difference x8, so a colour means a real change), black where equal.
PSNRs (the view and the 12-view novel mean) go to ``benchmarks/results/worst_views.json``.

    python benchmarks/worst_views.py --bundles benchmarks/work/worst_views

expects ``SCENE_new.sundae`` and ``SCENE_prune.sundae`` there, written by
``sundae-compress SCENE.ply --ratio 0.1 -o SCENE_new.sundae`` and the same with ``--no-finetune``
(``SCENE_prune.sundae``), and ``demo/scene.ply`` with its cameras.json
(``python examples/make_scene.py -o benchmarks/work/worst_views/demo/scene.ply``, the scene
``make demo`` compresses). For the demo it also splits the view by scene part (:func:`demo_parts`).
Not a timing: run it without the benchmark lock. Findings: ``benchmarks/results/worst_views.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results"
#: the worst novel view of the default bundle at 10 % (benchmarks/results/generalisation.md)
WORST = {"guitar": "novel_el+15_az260_d1.4", "donut": "novel_el+65_az230_d1.5",
         "demo": "novel_el+25_az320_d2.8", "playbot_125k": "novel_el+65_az230_d1.5"}
#: keep each committed PNG under this many bytes (downscaled with Pillow until it is)
MAX_BYTES = 300_000


def comparison_map(ref, a, b, scale: float = 8.0) -> np.ndarray:
    """Green where ``a`` is closer to ``ref`` than ``b`` is, red where it is further (per-pixel mean
    absolute error difference x ``scale``)."""
    d = (np.abs(b - ref).mean(2) - np.abs(a - ref).mean(2)) * scale
    out = np.zeros(ref.shape, np.float32)
    out[..., 1] = np.clip(d, 0, 1)
    out[..., 0] = np.clip(-d, 0, 1)
    return out


def save_small(path: Path, img: np.ndarray, max_bytes: int = MAX_BYTES, palette: bool = False) -> float:
    """Write ``img`` as a PNG no larger than ``max_bytes``, shrinking it in 10 % steps (Lanczos)
    until it fits; returns the scale used. ``palette``: store it with 256 adaptive colours (for
    the error maps, whose colours lie on two ramps; never for the renders)."""
    import io

    from PIL import Image

    from sundae_compress.io.images import to_uint8

    im = Image.fromarray(to_uint8(img), "RGB")
    scale = 1.0
    while True:
        cur = im if scale == 1.0 else im.resize((round(im.width * scale), round(im.height * scale)),
                                                Image.LANCZOS)
        if palette:
            cur = cur.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        cur.save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes or scale < 0.3:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.getvalue())
            return scale
        scale *= 0.9


def look(scene: str, bundles: Path, out_dir: Path) -> dict:
    import torch

    from sundae_compress.api import evaluation_views, load_for_render, load_scene
    from sundae_compress.evaluate import _compare, contact_sheet, error_heatmap, render_views
    from sundae_compress.io.images import label_columns

    torch.set_num_threads(2)
    src = bundles / "demo" / "scene.ply" if scene == "demo" else ASSETS / f"{scene}.ply"
    gs = load_scene(src)
    near, novel, _ = evaluation_views(gs, src)
    ref_all = render_views(gs, novel)
    res = {"scene": scene, "source": "examples/make_scene.py (120 k, seed 0) + cameras.json" if scene == "demo"
           else f"shared/assets/{scene}.ply", "view": WORST[scene]}
    imgs = {}
    for cfg in ("new", "prune"):
        cand, post = load_for_render(bundles / f"{scene}_{cfg}.sundae")
        out = render_views(cand, novel, postprocess=post)
        r = _compare(gs, cand, novel, ref_all, out)
        by_name = {v["name"]: v for v in r["views"]}
        worst = min(r["views"], key=lambda v: v["psnr"])
        res[cfg] = {"novel_psnr": r["psnr"], "view_psnr": by_name[WORST[scene]]["psnr"],
                    "view_ssim": by_name[WORST[scene]]["ssim"], "own_worst": worst["name"],
                    "own_worst_psnr": worst["psnr"], "bundle_bytes": (bundles / f"{scene}_{cfg}.sundae").stat().st_size,
                    "kept": len(cand)}
        imgs[cfg] = out[[c.name for c in novel].index(WORST[scene])]
    ref = ref_all[[c.name for c in novel].index(WORST[scene])]
    top = label_columns(contact_sheet([ref, imgs["new"], imgs["prune"]], cols=3),
                        (f"original: {scene} {WORST[scene]}", f"default: {res['new']['view_psnr']:.2f} dB",
                         f"prune-only: {res['prune']['view_psnr']:.2f} dB"))
    bottom = label_columns(contact_sheet([comparison_map(ref, imgs["new"], imgs["prune"]),
                                          error_heatmap(ref, imgs["new"]), error_heatmap(ref, imgs["prune"])], cols=3),
                           ("green: default better, red: worse", "error default x4", "error prune-only x4"))
    res["png"], res["png_scale"] = [], []
    for suffix, img in (("", top), ("_error", bottom)):
        png = out_dir / f"{scene}{suffix}.png"
        res["png_scale"].append(round(save_small(png, img, palette=bool(suffix)), 3))
        res["png"].append(str(png.relative_to(ROOT)))
    # where does fine-tuning lose to prune-only? share of pixels noticeably worse / better (> 2/255)
    ea, eb = np.abs(imgs["new"] - ref).mean(2), np.abs(imgs["prune"] - ref).mean(2)
    res["pixels_default_worse"] = round(float((ea > eb + 2 / 255).mean()), 4)
    res["pixels_default_better"] = round(float((eb > ea + 2 / 255).mean()), 4)
    for cfg in ("new", "prune"):
        res[cfg].update(where_is_the_error(ref, imgs[cfg]))
    np.save(bundles / f"{scene}_worst_renders.npy", np.stack([ref, imgs["new"], imgs["prune"]]))
    return res


def where_is_the_error(ref: np.ndarray, cand: np.ndarray) -> dict:
    """Where the squared error sits: on ``edges`` (the 10 % of pixels with the strongest gradient
    in the original), on ``empty`` pixels (original darker than 0.03: floaters / haze show here),
    or on the rest (``interior``: texture, shading); plus the mean signed error per channel on the
    non-empty pixels (a colour or brightness shift)."""
    grey = ref.mean(2)
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy)
    edges = mag >= np.quantile(mag, 0.9)
    empty = ref.max(2) <= 0.03
    se = ((cand - ref) ** 2).mean(2)
    total = float(se.sum()) or 1.0
    filled = ~empty
    return {"err_share_edges": round(float(se[edges].sum()) / total, 3),
            "err_share_empty": round(float(se[empty & ~edges].sum()) / total, 3),
            "err_share_interior": round(float(se[filled & ~edges].sum()) / total, 3),
            "empty_pixel_share": round(float(empty.mean()), 3),
            "signed_rgb_on_content": [round(float(v), 4) for v in (cand - ref)[filled].mean(0)]}


#: radii (from the origin) of the demo scene's parts (examples/make_scene.py): the knot and its
#: sphere inside 2.4, the floating detail blobs between 2.4 and 6.5, the sky shell at 8
DEMO_PARTS = (("knot", 0.0, 2.4), ("detail", 2.4, 7.0), ("shell", 7.0, float("inf")))


def demo_parts(bundles: Path, out_dir: Path) -> dict:
    """The demo's worst view, split by scene part: per part, the Gaussians' count, median opacity
    and median / 90th-percentile largest axis in each scene; and the knot alone (radius < 2.4)
    rendered from each, scored against the original's knot alone (``demo_knot_only.png``)."""
    import torch

    from sundae_compress.api import evaluation_views, load_for_render, load_scene
    from sundae_compress.evaluate import contact_sheet, render_views
    from sundae_compress.io.images import label_columns
    from sundae_compress.metrics import psnr

    src = bundles / "demo" / "scene.ply"
    scenes = {"original": load_scene(src)}
    for cfg in ("new", "prune"):
        scenes[cfg] = load_for_render(bundles / f"demo_{cfg}.sundae")[0]
    _, novel, _ = evaluation_views(scenes["original"], src)
    cam = [c for c in novel if c.name == WORST["demo"]]
    out: dict = {"parts": {}}
    knots = {}
    for name, g in scenes.items():
        r = np.linalg.norm(g.means, axis=1)
        op = 1.0 / (1.0 + np.exp(-g.opacities.reshape(-1)))
        big = np.exp(g.scales).max(1)
        out["parts"][name] = {}
        for part, lo, hi in DEMO_PARTS:
            m = (r >= lo) & (r < hi)
            out["parts"][name][part] = {"count": int(m.sum()), "median_opacity": round(float(np.median(op[m])), 3),
                                        "median_largest_axis": round(float(np.median(big[m])), 3),
                                        "p90_largest_axis": round(float(np.quantile(big[m], 0.9)), 3)}
        knots[name] = render_views(g.subset(np.nonzero(r < DEMO_PARTS[0][2])[0]), cam)[0]
    ref = torch.from_numpy(knots["original"])
    out["knot_only_psnr"] = {cfg: round(float(psnr(torch.from_numpy(knots[cfg]), ref)), 2) for cfg in ("new", "prune")}
    sheet = label_columns(contact_sheet([knots["original"], knots["new"], knots["prune"]], cols=3),
                          ("original, knot only (r < 2.4)", f"default, knot only: {out['knot_only_psnr']['new']:.2f} dB",
                           f"prune-only, knot only: {out['knot_only_psnr']['prune']:.2f} dB"))
    png = out_dir / "demo_knot_only.png"
    out["png_scale"] = round(save_small(png, sheet), 3)
    out["png"] = str(png.relative_to(ROOT))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundles", type=Path, default=ROOT / "benchmarks" / "work" / "worst_views")
    ap.add_argument("--scenes", nargs="+", default=list(WORST))
    args = ap.parse_args(argv)
    out_dir = RESULTS / "worst_views"
    path = RESULTS / "worst_views.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for scene in args.scenes:
        r = look(scene, args.bundles, out_dir)
        if scene == "demo":
            r["by_part"] = demo_parts(args.bundles, out_dir)
        results[scene] = r
        print(json.dumps(r), flush=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
