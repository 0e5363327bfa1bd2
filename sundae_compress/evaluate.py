"""Rendering views to files and comparing an original scene with a compressed one.

Used by the ``sundae-render`` and ``sundae-eval`` commands: ``render_views``,
``render_views_to_dir``, ``evaluate``, and small image helpers (contact sheets, side-by-side
comparisons with an error heat map; files are read and written by :mod:`.io.images`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .errors import SundaeError
from .gaussians import GaussianSet
from .io.images import label_columns, save_png, to_uint8
from .metrics import psnr, ssim
from .progress import Progress
from .render import RenderOutput, render
from .render.camera import Camera

Postprocess = Callable[[RenderOutput], torch.Tensor]


# -- images ----------------------------------------------------------------------------------
#: captions of the three columns of :func:`side_by_side`
SIDE_BY_SIDE_LABELS = ("original", "candidate", "error x4")


def contact_sheet(images: Sequence, cols: int = 4, pad: int = 2, bg: float = 1.0) -> np.ndarray:
    """Tile equally sized (H, W, 3) images into one float image, ``cols`` per row."""
    ims = [to_uint8(i).astype(np.float32) / 255.0 for i in images]
    if not ims:
        raise SundaeError("contact sheet: no images")
    h = max(i.shape[0] for i in ims)
    w = max(i.shape[1] for i in ims)
    cols = max(1, min(cols, len(ims)))
    rows = (len(ims) + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), bg, np.float32)
    for k, im in enumerate(ims):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + im.shape[0], x:x + im.shape[1]] = im
    return out


def error_heatmap(a, b, scale: float = 4.0) -> np.ndarray:
    """Per-pixel mean absolute error mapped black -> red -> yellow -> white (x ``scale``)."""
    a = to_uint8(a).astype(np.float32) / 255.0
    b = to_uint8(b).astype(np.float32) / 255.0
    e = np.clip(np.abs(a - b).mean(2) * scale, 0, 1)
    return np.stack([np.clip(3 * e, 0, 1), np.clip(3 * e - 1, 0, 1), np.clip(3 * e - 2, 0, 1)], 2)


def side_by_side(orig, cand) -> np.ndarray:
    """Original | candidate | error heat map, in one image (captions: :data:`SIDE_BY_SIDE_LABELS`)."""
    return contact_sheet([orig, cand, error_heatmap(orig, cand)], cols=3)


# -- rendering -------------------------------------------------------------------------------
def _final_rgb(out: RenderOutput, postprocess: Optional[Postprocess]) -> torch.Tensor:
    rgb = postprocess(out) if postprocess is not None else out.rgb
    return rgb.clamp(0.0, 1.0)


@torch.no_grad()
def render_views(gs: Union[GaussianSet, dict], cameras: Sequence[Camera], *, background=(0.0, 0.0, 0.0),
                 backend: str = "auto", sh_degree: Optional[int] = None,
                 postprocess: Optional[Postprocess] = None, progress: Optional[str] = None) -> List[np.ndarray]:
    """Render every camera; returns float32 (H, W, 3) arrays in [0, 1]. ``postprocess`` maps a
    RenderOutput to the final RGB (e.g. a neural compensation net)."""
    from .render import as_params, available_backends

    be = ("gsplat" if "gsplat" in available_backends() else "torch") if backend == "auto" else backend
    params = as_params(gs, device="cuda" if be == "gsplat" else None) if isinstance(gs, GaussianSet) else gs
    feats = params.get("features") if isinstance(params, dict) else None
    imgs = []
    with Progress(len(cameras), progress or "rendering", enabled=bool(progress)) as bar:
        for cam in cameras:
            out = render(params, cam, features=feats, background=background, sh_degree=sh_degree, backend=be)
            imgs.append(_final_rgb(out, postprocess).float().cpu().numpy())
            bar.update(1)
    return imgs


def render_views_to_dir(gs, cameras: Sequence[Camera], out_dir: Union[str, Path], *, sheet: bool = True,
                        **kw) -> List[Path]:
    """Render every camera to ``out_dir/<name or index>.png`` (+ ``contact_sheet.png``)."""
    out_dir = Path(out_dir)
    imgs = render_views(gs, cameras, **kw)
    paths = []
    for i, (cam, img) in enumerate(zip(cameras, imgs)):
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (cam.name or "")) or f"view_{i:03d}"
        paths.append(save_png(out_dir / f"{i:03d}_{stem}.png", img))
    if sheet and imgs:
        save_png(out_dir / "contact_sheet.png", contact_sheet(imgs, cols=min(6, len(imgs))))
    return paths


@torch.no_grad()
def evaluate(original_gs, candidate_gs, cameras: Sequence[Camera], *, background=(0.0, 0.0, 0.0),
             backend: str = "auto", postprocess: Optional[Postprocess] = None, net=None,
             side_by_side_dir: Optional[Union[str, Path]] = None,
             progress: Optional[str] = None) -> Dict:
    """Render both scenes from every camera and compare: per-view PSNR / SSIM and their means.
    The original is the reference. ``postprocess`` (or ``net``, a callable taking a RenderOutput)
    is applied to the candidate's renders only. LPIPS is reported as unavailable (no offline
    weights). With ``side_by_side_dir``, writes original | candidate | error PNGs there."""
    post = postprocess or net
    ref = render_views(original_gs, cameras, background=background, backend=backend, progress=progress)
    cand = render_views(candidate_gs, cameras, background=background, backend=backend, postprocess=post,
                        progress=progress)
    result = _compare(original_gs, candidate_gs, cameras, ref, cand)
    if side_by_side_dir is not None:
        for i, (a, b) in enumerate(zip(ref, cand)):
            save_png(Path(side_by_side_dir) / f"{i:03d}_compare.png", label_columns(side_by_side(a, b), SIDE_BY_SIDE_LABELS))
    return result


def _compare(original_gs, candidate_gs, cameras, ref, cand) -> Dict:
    views = []
    for i, (cam, a, b) in enumerate(zip(cameras, ref, cand)):
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        views.append({"name": cam.name or f"view_{i:03d}", "psnr": round(float(psnr(tb, ta)), 4),
                      "ssim": round(float(ssim(tb, ta)), 5)})
    n = max(len(views), 1)
    return {
        "n_views": len(views),
        "psnr": round(sum(v["psnr"] for v in views) / n, 4),
        "ssim": round(sum(v["ssim"] for v in views) / n, 5),
        "lpips": None,
        "lpips_note": "unavailable: no LPIPS weights available offline",
        "n_gaussians_original": _count(original_gs),
        "n_gaussians_candidate": _count(candidate_gs),
        "views": views,
    }


def _count(gs) -> int:
    return len(gs) if isinstance(gs, GaussianSet) else int(gs["means"].shape[0])


def render_to_dir(gs, cameras: Sequence[Camera], out_dir: Union[str, Path], *,
                  postprocess: Optional[Postprocess] = None, **kw) -> List[Path]:
    """``sundae-render``: PNG per view plus a contact sheet (see :func:`render_views_to_dir`)."""
    return render_views_to_dir(gs, cameras, out_dir, postprocess=postprocess, progress="rendering", **kw)


#: what each view set means (printed by ``sundae-eval`` and stored in its JSON)
VIEW_SET_NOTES = {
    "near": "views like those fine-tuning trains on (held-out views of the scene's camera file, or "
            "generated orbit views)",
    "novel": "deterministic views the trainer never samples (directions inside its exclusion cones; "
             "by default 480x360, wider than any training image)",
}


def view_sets(original_gs, *, real_cameras: Optional[Sequence[Camera]] = None,
              user_cameras: Optional[Sequence[Camera]] = None, size=None, up=None,
              near: int = 6) -> Dict[str, List[Camera]]:
    """The evaluation views for ``original_gs``: ``near`` and ``novel`` (see :data:`VIEW_SET_NOTES`).

    ``user_cameras`` (views the user asked for) replace ``near`` by ``cameras``: all of them.
    Otherwise ``real_cameras`` (the scene's own training cameras) give ``near`` their held-out
    split (the views fine-tuning never trains on), else ``near`` views are generated. ``size``
    (W, H) rescales the near/camera views and sets the novel views' size (default 480x360)."""
    from .render.cameras import NOVEL_SIZE, ViewFrame, near_views, novel_views, split_views

    frame = ViewFrame.of(original_gs, up, cameras=real_cameras)
    sets: Dict[str, List[Camera]] = {}
    if user_cameras is not None:
        sets["cameras"] = [c.scaled(*size) for c in user_cameras] if size else list(user_cameras)
    elif real_cameras:
        cams = split_views(list(real_cameras))[1]
        sets["near"] = [c.scaled(*size) for c in cams] if size else cams
    else:
        sets["near"] = near_views(frame, n=near, size=size or (320, 240))
    sets["novel"] = novel_views(frame, size=size or NOVEL_SIZE)
    return sets


@torch.no_grad()
def evaluate_view_sets(original_gs, candidate_gs, sets: Dict[str, Sequence[Camera]], *,
                       postprocess: Optional[Postprocess] = None,
                       side_by_side_path: Optional[Union[str, Path]] = None, max_sheet_views: int = 4,
                       progress: bool = False, references: Optional[Dict[str, list]] = None, **kw) -> Dict:
    """Score ``candidate_gs`` (+ ``postprocess``) against ``original_gs`` on each view set.

    Returns ``{set name: {psnr, ssim, n_views, views: [...], worst: {...}}, ..., "worst": the
    lowest-PSNR view of the novel set (else of the last set), "psnr": the novel-set mean}``. With
    ``side_by_side_path``, one PNG stacks original | candidate | error for the worst views.
    ``references``: a dict that keeps the original's renders per set name (filled on the first call),
    so scoring several candidates against one original renders it once."""
    out: Dict = {"lpips": None, "lpips_note": "unavailable: no LPIPS weights available offline",
                 "n_gaussians_original": _count(original_gs), "n_gaussians_candidate": _count(candidate_gs)}
    worst_imgs = []
    for name, cams in sets.items():
        cams = list(cams)
        label = f"rendering {name} views" if progress else None
        ref = references.get(name) if references is not None else None
        if ref is None:
            ref = render_views(original_gs, cams, progress=label, **kw)
            if references is not None:
                references[name] = ref
        cand = render_views(candidate_gs, cams, postprocess=postprocess, progress=label, **kw)
        r = _compare(original_gs, candidate_gs, cams, ref, cand)
        for key in ("lpips", "lpips_note", "n_gaussians_original", "n_gaussians_candidate"):
            r.pop(key, None)
        order = sorted(range(len(cams)), key=lambda i: r["views"][i]["psnr"])
        r["worst"] = dict(r["views"][order[0]]) if order else None
        r["note"] = VIEW_SET_NOTES.get(name, "")
        out[name] = r
        worst_imgs = [(ref[i], cand[i], name, r["views"][i]) for i in order[:max_sheet_views]]
    main = out.get("novel") or out[list(sets)[-1]]
    out["psnr"], out["ssim"], out["worst"] = main["psnr"], main["ssim"], main["worst"]
    if side_by_side_path is not None and worst_imgs:
        # one row per view: the worst views of the novel set (else of the last set), worst first,
        # each captioned with its set, name and PSNR so the row count explains itself
        rows = [label_columns(side_by_side(a, b), (f"{SIDE_BY_SIDE_LABELS[0]}: "
                                                   + (v["name"] if v["name"].startswith(name) else f"{name} {v['name']}"),
                                                   f"{SIDE_BY_SIDE_LABELS[1]}: {v['psnr']:.2f} dB",
                                                   SIDE_BY_SIDE_LABELS[2]))
                for a, b, name, v in worst_imgs]
        save_png(side_by_side_path, contact_sheet(rows, cols=1))
        out["side_by_side"] = str(side_by_side_path)
        out["side_by_side_rows"] = [{"set": name, "name": v["name"], "psnr": v["psnr"]} for _, _, name, v in worst_imgs]
    return out
