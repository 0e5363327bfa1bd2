"""Bytes and fidelity of every output format (.sundae, .spz, .sog, .compressed.ply, .ply) on the
shared scenes, at 10 % and 100 % of the Gaussians.

Usage: python benchmarks/bench_interop.py
           [--scenes donut guitar playbot_125k] [--ratios 0.1 1.0] [--finetune-scene guitar] [--no-reference]

For each scene and ratio the pruned scene (``prune_scene``: spectral selection / collapse merge, no
fine-tuning) is written once in every format; each file is decoded by our reader, written as a
float PLY and rendered by the independent reference renderer (/work/shared/tools/refrender.py:
4 orbit views at 320x240) against the SOURCE scene; the PSNR is the mean over those views. With
``--finetune-scene`` one extra row fine-tunes that scene at 10 % (CPU defaults, net included in the
bundle; the other formats hold the same Gaussians without the net, and refrender renders no net).
When ``splat-transform`` is installed (~/.cache/sundae-compress/npm), its own spz / compressed.ply of
the full scene are listed too (decoded by our reader). Writes benchmarks/results/interop.{json,md}.

Its claims are bytes and PSNR, which do not depend on machine load; it is not a speed benchmark
(the write seconds are indicative only), so it may run outside /tmp/sundae-bench.lock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sundae_compress.api import prune_scene  # noqa: E402
from sundae_compress.io.bundle import read_bundle, write_bundle  # noqa: E402
from sundae_compress.io.formats import FORMATS, read_scene, write_scene  # noqa: E402
from sundae_compress.io.ply import read_ply, write_ply  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
REFRENDER = ROOT.parent / "shared" / "tools" / "refrender.py"
WORK = ROOT / "benchmarks" / "work" / "interop"
RESULTS = ROOT / "benchmarks" / "results"
ORDER = ["sundae", "spz", "sog", "compressed-ply", "ply"]
ST = Path.home() / ".cache" / "sundae-compress" / "npm" / "node_modules" / ".bin" / "splat-transform"


#: Reference-renderer views per scene (orbit, 320x240, focal 300 px as refrender's own CLI; it uses 6).
VIEWS = 4
_REF_CACHE: dict = {}


def _refrender():
    import importlib.util

    spec = importlib.util.spec_from_file_location("refrender", REFRENDER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def refrender_psnr(src: Path, files) -> dict:
    """Mean PSNR over VIEWS refrender orbit views of each PLY in ``files`` vs ``src`` (renders of
    the source are cached per scene)."""
    import numpy as np

    rr = _refrender()
    W, H, f = 320, 240, 300.0
    if str(src) not in _REF_CACHE:
        g = rr.load_ply(str(src))
        cams = rr.orbit_cameras(g, n=VIEWS)
        _REF_CACHE[str(src)] = (cams, [rr.render(g, V, f, f, W / 2, H / 2, W, H) for V in cams])
    cams, refs = _REF_CACHE[str(src)]
    out = {}
    for p in files:
        g = rr.load_ply(str(p))
        out[str(p)] = round(float(np.mean([rr.psnr(rr.render(g, V, f, f, W / 2, H / 2, W, H), r)
                                           for V, r in zip(cams, refs)])), 2)
    return out


def write_all(gs, folder: Path, tag: str, net=None, net_meta=None) -> dict:
    """Every format of ``gs`` under ``folder``: {fmt: {"bytes", "write_s", "decoded_ply"}}."""
    out = {}
    for fmt in ORDER:
        path = folder / f"{tag}{FORMATS[fmt].suffix}"
        t = time.perf_counter()
        if fmt == "sundae":
            write_bundle(path, gs, net=net, net_meta=net_meta)
        else:
            write_scene(gs, path, fmt)
        dt = time.perf_counter() - t
        dec = read_bundle(path).gaussians if fmt == "sundae" else read_scene(path)
        assert len(dec) == len(gs), (fmt, len(dec), len(gs))
        dec_ply = folder / f"{tag}.{fmt}.decoded.ply"
        write_ply(dec.replace(features=None), dec_ply)
        out[fmt] = {"bytes": path.stat().st_size, "write_s": round(dt, 2), "decoded_ply": str(dec_ply),
                    "bits_per_gaussian": round(8 * path.stat().st_size / len(gs), 2)}
    return out


def bench(scene: str, ratio: float, rows: list):
    src = ASSETS / f"{scene}.ply"
    gs = read_ply(src)
    folder = WORK / scene
    folder.mkdir(parents=True, exist_ok=True)
    kept = gs if ratio >= 1 else prune_scene(gs, ratio=ratio)
    tag = f"{scene}_{int(round(ratio * 100))}"
    res = write_all(kept, folder, tag)
    lossless = ratio >= 1  # the .ply of the full scene is the source, bit for bit: no render needed
    psnr = refrender_psnr(src, [r["decoded_ply"] for f, r in res.items() if not (lossless and f == "ply")])
    if lossless:
        psnr[res["ply"]["decoded_ply"]] = "inf (bit-exact)"
    for fmt, r in res.items():
        rows.append({"scene": scene, "ratio": ratio, "finetune": False, "format": fmt, "count": len(kept),
                     "bytes": r["bytes"], "bits_per_gaussian": r["bits_per_gaussian"], "write_s": r["write_s"],
                     "refrender_psnr_db": psnr[r["decoded_ply"]], "writer": "sundae-compress"})
        print(rows[-1], flush=True)


def bench_finetuned(scene: str, rows: list):
    import sundae_compress as sc

    src = ASSETS / f"{scene}.ply"
    folder = WORK / scene
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / f"{scene}_10_ft.sundae"
    t = time.perf_counter()
    rep = sc.compress(src, bundle, ratio=0.1, overwrite=True)
    ft_s = time.perf_counter() - t
    b = read_bundle(bundle)
    res = write_all(b.gaussians, folder, f"{scene}_10_ft", net=b.net, net_meta=b.net_meta)
    psnr = refrender_psnr(src, [r["decoded_ply"] for r in res.values()])
    for fmt, r in res.items():
        rows.append({"scene": scene, "ratio": 0.1, "finetune": True, "format": fmt, "count": len(b.gaussians),
                     "bytes": r["bytes"], "bits_per_gaussian": r["bits_per_gaussian"], "write_s": r["write_s"],
                     "refrender_psnr_db": psnr[r["decoded_ply"]], "writer": "sundae-compress",
                     "finetune_s": round(ft_s, 1), "net_bytes": rep.net_bytes})
        print(rows[-1], flush=True)


def bench_reference_tool(scene: str, rows: list):
    """splat-transform's own spz / compressed.ply of the full scene (sizes + refrender PSNR)."""
    src = ASSETS / f"{scene}.ply"
    folder = WORK / scene
    decs = {}
    for fmt in ("spz", "compressed-ply"):
        out = folder / f"{scene}_st{FORMATS[fmt].suffix}"
        t = time.perf_counter()
        subprocess.run([str(ST), "-w", "-q", str(src), str(out)], check=True, capture_output=True)
        dt = time.perf_counter() - t
        dec = read_scene(out)
        dec_ply = folder / f"{scene}_st.{fmt}.decoded.ply"
        write_ply(dec, dec_ply)
        decs[fmt] = (out, dec_ply, dt, len(dec))
    psnr = refrender_psnr(src, [d[1] for d in decs.values()])
    for fmt, (out, dec_ply, dt, n) in decs.items():
        rows.append({"scene": scene, "ratio": 1.0, "finetune": False, "format": fmt, "count": n,
                     "bytes": out.stat().st_size, "bits_per_gaussian": round(8 * out.stat().st_size / n, 2),
                     "write_s": round(dt, 2), "refrender_psnr_db": psnr[str(dec_ply)], "writer": "splat-transform"})
        print(rows[-1], flush=True)


def machine() -> dict:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "ram_gb": round(mem / 2 ** 30, 1), "python": platform.python_version(),
            "platform": platform.platform()}


def to_markdown(d: dict) -> str:
    m = d["machine"]
    lines = ["# Interop formats: bytes and fidelity", "",
             "`benchmarks/bench_interop.py`: each scene pruned with `prune_scene` (no fine-tuning unless the row "
             "says so) and written in every format; each file decoded by our reader and rendered by the "
             "independent reference renderer (`shared/tools/refrender.py`, 4 orbit views at 320x240, mean PSNR) "
             "against the **source** scene. At 100 % the PSNR is pure format loss. The `.sundae` rows are the "
             "Gaussians alone (refrender applies no net; fine-tuned row: the net is in the bundle bytes). "
             "\"splat-transform\" rows are that tool's own output from the full source PLY.", "",
             f"Machine: {m['nproc']} cores, {m['ram_gb']} GB RAM, {m['platform']} (shared with other jobs). Bytes "
             "and PSNR are the claims; the write seconds are indicative only (not run under the benchmark lock)."]
    for run in d["runs"]:
        lines.append(f"- run `{' '.join(run['args']) or '(defaults)'}`: load average {run['load_start']} at start, "
                     f"{run['load_end']} at end; wall {run['wall_s']:.0f} s, CPU {run['cpu_s']:.0f} s (with child "
                     f"processes), peak RSS {run['peak_rss_mb']:.0f} MB (children, i.e. splat-transform: "
                     f"{run['peak_rss_children_mb']:.0f} MB).")
    ft = [r for r in d["rows"] if r.get("finetune_s")]
    if ft:
        lines.append(f"- fine-tuned rows: `sundae_compress.compress(ratio=0.1)` with the CPU defaults took "
                     f"{ft[0]['finetune_s']:.0f} s; its bundle holds a {ft[0]['net_bytes'] / 1e3:.1f} KB net; the "
                     "other formats hold the bundle's decoded Gaussians (what `sundae-decompress -o x.spz` writes).")
    lines += ["- splat-transform keeps the rows of the source that hold NaN (guitar: 667 of 90,854), our reader "
              "drops them; refrender drops them too.",
              "",
             "| scene | kept | fine-tuned | format | writer | bytes | bits/Gaussian | PSNR dB (refrender) | write s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['scene']} | {r['count']:,} ({r['ratio']:.0%}) | {'yes' if r['finetune'] else 'no'} | "
                     f"{FORMATS[r['format']].suffix} | {r['writer']} | {r['bytes']:,} | {r['bits_per_gaussian']} | "
                     f"{r['refrender_psnr_db']} | {r['write_s']} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", nargs="*", default=["donut", "guitar", "playbot_125k"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.1, 1.0])
    ap.add_argument("--finetune-scene", default=None)
    ap.add_argument("--no-reference", action="store_true", help="skip splat-transform's own outputs")
    ap.add_argument("--append", action="store_true", help="add the rows to the existing results (another run)")
    ap.add_argument("--name", default="interop", help="results file stem under benchmarks/results/")
    ap.add_argument("--merge", default=None, help="only merge benchmarks/results/NAME.json into the results")
    args = ap.parse_args()
    if args.merge:
        main_d = json.loads((RESULTS / f"{args.name}.json").read_text())
        extra = json.loads((RESULTS / f"{args.merge}.json").read_text())
        main_d = {"machine": main_d["machine"], "runs": main_d["runs"] + extra["runs"],
                  "rows": main_d["rows"] + extra["rows"]}
        (RESULTS / f"{args.name}.json").write_text(json.dumps(main_d, indent=2) + "\n")
        (RESULTS / f"{args.name}.md").write_text(to_markdown(main_d))
        (RESULTS / f"{args.merge}.json").unlink()
        (RESULTS / f"{args.merge}.md").unlink()
        return
    t0, load0 = time.perf_counter(), os.getloadavg()
    rows: list = []
    for scene in args.scenes:
        for ratio in args.ratios:
            bench(scene, ratio, rows)
        if not args.no_reference and ST.exists():
            bench_reference_tool(scene, rows)
    if args.finetune_scene:
        bench_finetuned(args.finetune_scene, rows)
    ru, rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    run = {"args": sys.argv[1:], "load_start": [round(x, 2) for x in load0],
           "load_end": [round(x, 2) for x in os.getloadavg()], "wall_s": time.perf_counter() - t0,
           "cpu_s": ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
           "peak_rss_children_mb": rc.ru_maxrss / 1024}
    d = {"machine": machine(), "runs": [run], "rows": rows}
    if args.append and (RESULTS / f"{args.name}.json").exists():
        old = json.loads((RESULTS / f"{args.name}.json").read_text())
        d = {"machine": d["machine"], "runs": old["runs"] + [run], "rows": old["rows"] + rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(d, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(to_markdown(d))
    print(to_markdown(d))


if __name__ == "__main__":
    main()
