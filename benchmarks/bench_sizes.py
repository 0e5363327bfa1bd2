"""Bundle bytes per section and novel-view fidelity of 10 % bundles: codec v1 vs v2 vs v4 (default).

Usage: python benchmarks/bench_sizes.py [--scenes donut guitar playbot_125k] [--no-whole]

Writes benchmarks/results/sizes.json and sizes.md. Each scene is pruned to 10 % exactly as
``sundae-compress SCENE --ratio 0.1 --no-finetune`` does (spectral selection + collapse merge), then the
same pruned Gaussians are written three ways:

* v1 — the v1 codec with its old defaults (format 1: k-means SH codebook, 6-bit colour codebook,
  16-bit positions, 8-bit scales, zstd 19), as written by the code before codec v2;
* v2 — the default (``medium``) preset coded as format 2 (RGB colour: colour codebook, SH per RGB channel);
* v4 — the default preset as written now (format 4: colour in the orthonormal colour basis).

Each decoded bundle is rendered with the project's renderer on the evaluation views of
:func:`sundae_compress.evaluate.view_sets` (near views and the 12 novel views at 480x360) and scored
against the source scene; ``codec only`` scores the same novel renders against the unquantised pruned
scene (what the codec alone loses). ``--no-whole`` skips the whole-scene byte table (PSNR of whole
scenes: rate_distortion.md). Nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sundae_compress.api import prune_scene  # noqa: E402
from sundae_compress.codec import CodecSettings, quality_settings  # noqa: E402
from sundae_compress.evaluate import _compare, render_views, view_sets  # noqa: E402
from sundae_compress.io.bundle import inspect_bundle, read_bundle, write_bundle  # noqa: E402
from sundae_compress.io.ply import read_ply  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
SECTIONS = ["means", "quats", "scales", "opacities", "sh_dc", "sh_rest"]
#: The v1 codec's defaults before codec v2 (commit 736f832).
V1_SETTINGS = CodecSettings(position_bits=16, rotation_bits=7, scale_bits=8, scale_mode="linear", opacity_bits=6,
                            opacity_mode="linear", color_bits=6, color_mode="codebook", sh_mode="vq",
                            sh_codebook_size=0, sh_codebook_bits=8, sh_iters=8, zstd_level=19)
CODINGS = [("v1", V1_SETTINGS, 1), ("v2", quality_settings(), 2), ("v4", quality_settings(), 4)]


def _sections(info, n):
    return {s["name"]: round(8 * s["bytes"] / n, 2) for s in info["sections"]}


def _scores(src, cand, sets, refs, imgs=None):
    """near / novel / worst-novel-view PSNR of ``cand`` against the source renders ``refs`` (the same
    numbers as evaluate_view_sets, with the source rendered once per scene)."""
    imgs = imgs or {k: render_views(cand, sets[k]) for k in ("near", "novel")}
    r = {k: _compare(src, cand, sets[k], refs[k], imgs[k]) for k in ("near", "novel")}
    return {"near_db": round(r["near"]["psnr"], 2), "novel_db": round(r["novel"]["psnr"], 2),
            "worst_db": round(min(v["psnr"] for v in r["novel"]["views"]), 2)}, imgs


def bench_tenth(name, tmp):
    gs = read_ply(ASSETS / f"{name}.ply")
    small = prune_scene(gs, ratio=0.1)
    sets = view_sets(gs)
    refs = {k: render_views(gs, sets[k]) for k in ("near", "novel")}
    scores, pruned_imgs = _scores(gs, small, sets, refs)
    rows = [{"scene": name, "coding": "pruned, unquantised", "kept": len(small), **scores}]
    print(json.dumps(rows[-1]), flush=True)
    for label, s, version in CODINGS:
        p = Path(tmp) / f"{name}_{label}.sundae"
        st = write_bundle(p, small, settings=s, version=version)
        dec = read_bundle(p).gaussians
        info = inspect_bundle(p)
        scores, imgs = _scores(gs, dec, sets, refs)
        codec_only = _compare(small, dec, sets["novel"], pruned_imgs["novel"], imgs["novel"])["psnr"]
        row = {"scene": name, "coding": label, "kept": len(small), "format": version, "bytes": st.file_bytes,
               "bits_per_gaussian": round(st.bits_per_gaussian, 2), "header_bytes": info["header_bytes"],
               "sections_bits": _sections(info, len(small)), **scores, "codec_only_novel_db": round(codec_only, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    v1 = rows[1]["bytes"]
    for r in rows[2:]:
        r["change_vs_v1"] = round(r["bytes"] / v1 - 1, 4)
    return rows


def bench_whole(name, tmp):
    gs = read_ply(ASSETS / f"{name}.ply")
    rows = []
    for label, s, version in CODINGS:
        p = Path(tmp) / f"{name}_whole_{label}.sundae"
        st = write_bundle(p, gs, settings=s, version=version)
        rows.append({"scene": name, "coding": label, "gaussians": len(gs), "bytes": st.file_bytes,
                     "bits_per_gaussian": round(st.bits_per_gaussian, 2),
                     "sections_bits": _sections(inspect_bundle(p), len(gs))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def to_markdown(doc):
    L = ["# Bundle sizes: codec v1 vs v2 vs v4 (default) at 10 %" + (" and on whole scenes" if doc.get("whole") else ""), "",
         f"Generated by `benchmarks/bench_sizes.py` ({doc['machine']}; wall {doc['wall_s']} s; nothing timed). "
         "v1 = the v1 codec with its old defaults (format 1, k-means SH, zstd 19); v2 = the default `medium` "
         "preset in format 2 (RGB colour); v4 = the default preset as written now (format 4, colour in an "
         "orthonormal colour basis). v4 settings: "
         + ", ".join(f"{k}={v}" for k, v in quality_settings().to_dict().items()) + ".", "",
         "## 10 % bundles (`sundae-compress SCENE --ratio 0.1 --no-finetune`)", "",
         "PSNR of the decoded bundle against the source scene (project renderer): near views, the 12 novel "
         "views at 480x360 (mean and worst view); `codec only` = the novel views against the unquantised "
         "pruned scene.", "",
         "| scene | coding | bytes | vs v1 | bits/G | " + " | ".join(SECTIONS)
         + " | header B | near dB | novel dB | worst dB | codec only dB |",
         "|---|---|---:|---:|---:|" + "---:|" * len(SECTIONS) + "---:|---:|---:|---:|---:|"]
    for r in doc["tenth"]:
        if "bytes" not in r:
            L.append(f"| {r['scene']} ({r['kept']:,} kept) | {r['coding']} | | | | " + " | " * len(SECTIONS)
                     + f" | {r['near_db']} | {r['novel_db']} | {r['worst_db']} | |")
            continue
        secs = [f"{r['sections_bits'][n]:.2f}" if n in r["sections_bits"] else "-" for n in SECTIONS]
        ch = f"{100 * r['change_vs_v1']:+.1f} %" if "change_vs_v1" in r else ""
        L.append(f"| {r['scene']} | {r['coding']} | {r['bytes']:,} | {ch} | {r['bits_per_gaussian']:.2f} | "
                 + " | ".join(secs) + f" | {r['header_bytes']:,} | {r['near_db']} | {r['novel_db']} | "
                 f"{r['worst_db']} | {r['codec_only_novel_db']} |")
    if doc.get("whole"):
        L += ["", "## Whole scenes (`--ratio 1 --no-finetune`): bytes only (PSNR per preset: rate_distortion.md)", "",
              "| scene | coding | Gaussians | bytes | bits/G | " + " | ".join(SECTIONS) + " |",
              "|---|---|---:|---:|---:|" + "---:|" * len(SECTIONS)]
        for r in doc["whole"]:
            secs = [f"{r['sections_bits'][n]:.2f}" if n in r["sections_bits"] else "-" for n in SECTIONS]
            L.append(f"| {r['scene']} | {r['coding']} | {r['gaussians']:,} | {r['bytes']:,} | "
                     f"{r['bits_per_gaussian']:.2f} | " + " | ".join(secs) + " |")
    L += ["", "Section columns are bits per Gaussian after zstd."]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["donut", "guitar", "playbot_125k"])
    ap.add_argument("--no-whole", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    t = time.perf_counter()
    doc = {"machine": f"{os.cpu_count()} cores, {platform.platform()}", "tenth": [], "whole": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.scenes:
            doc["tenth"] += bench_tenth(name, tmp)
        if not a.no_whole:
            for name in a.scenes:
                doc["whole"] += bench_whole(name, tmp)
    doc["wall_s"] = round(time.perf_counter() - t, 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sizes.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "sizes.md").write_text(to_markdown(doc))


if __name__ == "__main__":
    main()
