"""Speed and memory of the spectral scorer on a 4.9 M-Gaussian scene.

The scene is playbot_125k tiled 40 times on a 4x4x3 grid (10 % gaps) with 1e-4 jitter (so the
copies are not exact translates), cut to 4,900,000 centres. Each measurement runs in a fresh
subprocess that first builds the centres, records its peak RSS (``ru_maxrss``) as the baseline,
then runs the measured call; the reported memory is peak RSS minus that baseline.

Measured:
  * ``fast``       -- :func:`spectral_scores` (C grid kernel), wall time per stage and CPU time
                      (user + sys of all threads), ``REPS`` + 1 times (the first run may include
                      compiling the kernel and is not reported; the fastest of the others is, with
                      every run's wall / CPU / load average listed).
  * ``select``     -- band-stop selection of 10 % from the scores.
  * ``ckdtree``    -- the reference's neighbour query alone (scipy cKDTree, k=17, all cores).
  * alternatives to the C kernel, each the k=17 neighbour search of the same centres:
    ``pykdtree`` (OpenMP queries; plus the numpy scoring of :func:`graph.scores_from_graph` for a
    complete scorer), ``numba`` (a parallel grid search written for this comparison: the same
    cells, 3x3x3 block and sorted top-k insertion as the C kernel's first pass, without its ring
    growth, so a lower bound; compile time excluded).
  * ``ordinary_1m`` / ``coincident_1m`` -- :func:`spectral_scores` of 1 M of the centres vs
    1 M identical centres.
  * ``compress`` -- the whole ``compress(..., finetune=False)`` (read PLY → scores → select →
    assign-merge → encode → write) of the 4.9 M scene written as a PLY under benchmarks/work,
    next to ``ckdtree_k9``: a scipy cKDTree build + k=9 query (all cores) on the same centres.

Writes benchmarks/results/prune_speed.json and .md. Usage: ``python benchmarks/bench_prune_speed.py``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
OUT = ROOT / "benchmarks" / "results"
N = int(os.environ.get("BENCH_N", "4900000"))
REPS = int(os.environ.get("BENCH_REPS", "4"))
WHAT = [w for w in os.environ.get("BENCH_WHAT", "fast,select,ckdtree,pykdtree,numba,ordinary_1m,coincident_1m,"
                                  "ckdtree_k9,compress").split(",") if w]


def build_points():
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from sundae_compress.io.ply import read_ply

    x = read_ply(ASSETS / "playbot_125k.ply").means
    ext = x.max(0) - x.min(0)
    rng = np.random.default_rng(0)
    tiles = [x + np.array([t % 4, (t // 4) % 4, t // 16]) * ext * 1.1 + rng.normal(0, 1e-4, x.shape)
             for t in range(40)]
    return np.concatenate(tiles)[:N].astype(np.float32)


def _cpu_s():
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(what: str):
    import numpy as np

    x = build_points()
    base = _rss_mb()
    out = {"n": len(x)}
    if what == "fast":
        from sundae_compress.prune.graph import kernel_available, spectral_scores

        out["kernel"] = kernel_available()
        spectral_scores(x[:1000])  # imports
        runs = []
        for _ in range(REPS + 1):
            tm = {}
            load = os.getloadavg()[0]
            c0, t0 = _cpu_s(), time.perf_counter()
            s = spectral_scores(x, timings=tm)
            tm["total"] = time.perf_counter() - t0
            tm["total CPU (all threads)"] = _cpu_s() - c0
            tm["load average (1 min) before"] = load
            runs.append(tm)
        best = min(runs[1:], key=lambda r: r["total"])
        out["stages"] = best
        out["runs"] = [{"wall": r["total"], "cpu": r["total CPU (all threads)"],
                        "load": r["load average (1 min) before"]} for r in runs[1:]]
        out["first_run_total"] = runs[0]["total"]
        np.save("/tmp/_prune_bench_scores.npy", s)
    elif what == "select":
        from sundae_compress.prune.select import band_stop

        s = np.load("/tmp/_prune_bench_scores.npy")
        base = _rss_mb()
        c0, t0 = _cpu_s(), time.perf_counter()
        idx = band_stop(s, int(round(0.1 * len(s))), 0.5)
        out["stages"] = {"band-stop selection (10%)": time.perf_counter() - t0,
                         "band-stop selection CPU": _cpu_s() - c0}
        out["kept"] = int(len(idx))
    elif what in ("pykdtree", "numba"):
        out["stages"] = _alternative(what, x)
    elif what in ("ordinary_1m", "coincident_1m"):
        from sundae_compress.prune.graph import spectral_scores

        xs = x[np.random.default_rng(1).choice(len(x), 1_000_000, replace=False)] if what == "ordinary_1m" \
            else np.full((1_000_000, 3), 0.5, np.float32)
        base = _rss_mb()
        spectral_scores(xs[:1000])  # warm-up (imports)
        c0, t0 = _cpu_s(), time.perf_counter()
        spectral_scores(xs)
        out["stages"] = {"spectral scores 1 M": time.perf_counter() - t0, "CPU": _cpu_s() - c0}
    elif what == "ckdtree_k9":
        from scipy.spatial import cKDTree

        xd = x.astype(np.float64)
        c0, t0 = _cpu_s(), time.perf_counter()
        cKDTree(xd).query(xd, k=9, workers=-1)
        out["stages"] = {"cKDTree build + query k=9": time.perf_counter() - t0, "CPU": _cpu_s() - c0}
    elif what == "compress":
        from sundae_compress.api import compress
        from sundae_compress.progress import set_quiet

        set_quiet(True)
        ply = _scene_ply()
        base = _rss_mb()
        c0, t0 = _cpu_s(), time.perf_counter()
        rep = compress(ply, ply.with_suffix(".sundae"), ratio=0.1, finetune=False, overwrite=True)
        out["stages"] = {"compress --no-finetune (ratio 0.1)": time.perf_counter() - t0, "CPU": _cpu_s() - c0,
                         **{f"  {k}": v for k, v in rep.stages.items()}}
        out["merge"] = rep.merge
    elif what == "ckdtree":
        from scipy.spatial import cKDTree

        xd = x.astype(np.float64)
        c0, t0 = _cpu_s(), time.perf_counter()
        tree = cKDTree(xd)
        t1 = time.perf_counter()
        tree.query(xd, k=17, workers=-1)
        out["stages"] = {"cKDTree build": t1 - t0, "cKDTree query k=17": time.perf_counter() - t1,
                         "total CPU (all threads)": _cpu_s() - c0}
    out["peak_rss_mb_above_baseline"] = _rss_mb() - base
    print("RESULT " + json.dumps(out))


def _scene_ply() -> Path:
    """The 4.9 M scene (all attributes: playbot_125k tiled like :func:`build_points`) as a PLY in
    benchmarks/work (written once)."""
    import numpy as np

    from sundae_compress.gaussians import GaussianSet
    from sundae_compress.io.ply import read_ply, write_ply

    p = ROOT / "benchmarks" / "work" / f"playbot_tiled_{N}.ply"
    if p.exists():
        return p
    gs = read_ply(ASSETS / "playbot_125k.ply")
    reps = -(-N // len(gs))
    idx = np.tile(np.arange(len(gs)), reps)[:N]
    means = build_points()
    big = GaussianSet(means=means, quats=gs.quats[idx], scales=gs.scales[idx], opacities=gs.opacities[idx],
                      sh=gs.sh[idx])
    p.parent.mkdir(parents=True, exist_ok=True)
    write_ply(big, p)
    return p


def _alternative(what: str, x):
    """k=17 neighbour search (and for pykdtree the numpy scoring) with a library instead of the C kernel."""
    import numpy as np

    k = 17
    st = {}
    if what == "pykdtree":
        from pykdtree.kdtree import KDTree

        from sundae_compress.prune.graph import _cut, scores_from_graph

        c0, t0 = _cpu_s(), time.perf_counter()
        tree = KDTree(x)
        t1 = time.perf_counter()
        d, idx = tree.query(x, k=k)
        t2 = time.perf_counter()
        st["pykdtree build"] = t1 - t0
        st["pykdtree query k=17"] = t2 - t1
        st["kNN CPU"] = _cpu_s() - c0
        d2 = (d[:, 1:].astype(np.float32)) ** 2
        g = _cut(idx[:, 1:].astype(np.int64), d2, None)
        scores_from_graph(x, g.nbr, g.d2)
        st["threshold + numpy scores"] = time.perf_counter() - t2
        st["total"] = time.perf_counter() - t0
        st["total CPU"] = _cpu_s() - c0
        return st
    import numba

    from sundae_compress.prune import native
    from sundae_compress.prune.graph import CELL_FACTOR, _estimate_kth, _Grid

    @numba.njit(parallel=True, cache=False)
    def knn(pts, keys, start, m, dims, lo, s, k, out_n, out_d):
        for cm in numba.prange(m):
            key = keys[cm]
            cx = key % dims[0]
            cy = (key // dims[0]) % dims[1]
            cz = key // (dims[0] * dims[1])
            bd = np.empty(k, np.float32)
            bi = np.empty(k, np.int32)
            for i in range(start[cm], start[cm + 1]):
                cnt = 0
                px, py, pz = pts[i, 0], pts[i, 1], pts[i, 2]
                for dz in range(-1, 2):
                    for dy in range(-1, 2):
                        y, z = cy + dy, cz + dz
                        if y < 0 or z < 0 or y >= dims[1] or z >= dims[2]:
                            continue
                        base = (z * dims[1] + y) * dims[0]
                        a = np.searchsorted(keys, base + max(cx - 1, 0))
                        b = np.searchsorted(keys, base + min(cx + 1, dims[0] - 1) + 1)
                        for j in range(start[a], start[b]):
                            if j == i:
                                continue
                            ex, ey, ez = px - pts[j, 0], py - pts[j, 1], pz - pts[j, 2]
                            d = ex * ex + ey * ey + ez * ez
                            if cnt == k and d >= bd[k - 1]:
                                continue
                            pos = cnt if cnt < k else k - 1
                            while pos > 0 and bd[pos - 1] > d:
                                bd[pos] = bd[pos - 1]
                                bi[pos] = bi[pos - 1]
                                pos -= 1
                            bd[pos] = d
                            bi[pos] = j
                            if cnt < k:
                                cnt += 1
                for t in range(k):
                    out_n[i, t] = bi[t] if t < cnt else -1
                    out_d[i, t] = bd[t] if t < cnt else np.inf

    lib = native.lib()
    g = _Grid(lib, x, _estimate_kth(x, k - 1) * CELL_FACTOR)
    nbr = np.empty((len(x), k - 1), np.int32)
    d2 = np.empty((len(x), k - 1), np.float32)
    tc = time.perf_counter()
    small = _Grid(lib, x[:20000], g.s)
    knn(small.pts, small.keys[: small.m], small.start, small.m, small.dims, small.lo, small.s, k - 1,
        nbr[:20000], d2[:20000])
    st["numba compile + warm-up"] = time.perf_counter() - tc
    c0, t0 = _cpu_s(), time.perf_counter()
    knn(g.pts, g.keys[: g.m], g.start, g.m, g.dims, g.lo, g.s, k - 1, nbr, d2)
    st["numba grid search (3x3x3 block only)"] = time.perf_counter() - t0
    st["CPU"] = _cpu_s() - c0
    st["threads"] = numba.get_num_threads()
    return st


def machine():
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        up = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        up = ""
    return {"nproc": os.cpu_count(), "cpu": cpu, "loadavg_at_start": os.getloadavg(), "uptime": up,
            "python": platform.python_version(), "platform": platform.platform()}


def run_child(what: str, timeout: float = 600):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--child", what], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["loadavg_after"] = os.getloadavg()
            return r
    return {"error": (p.stderr or p.stdout)[-2000:], "wall": time.perf_counter() - t0}


def main():
    info = machine()
    res = {"machine": info, "n": N, "scene": "playbot_125k x40 (tiled, jittered)"}
    for what in WHAT:
        print(f"running {what} ...", flush=True)
        res[what] = run_child(what)
        print(json.dumps(res[what], indent=1), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "prune_speed.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Spectral scorer speed (4.9 M centres)", "",
             f"Machine: {info['cpu']}, nproc {info['nproc']}, load average at start "
             f"{', '.join(f'{v:.2f}' for v in info['loadavg_at_start'])} (shared with other jobs; wall "
             "times are inflated by the load, CPU times are not: on an idle machine the wall time is about "
             "CPU / threads).", "", f"`uptime` at start: `{info['uptime']}`", "",
             "| run | stage | seconds (wall unless CPU) |", "|---|---|---|"]
    for what in WHAT:
        r = res[what]
        for k, v in r.get("stages", {}).items():
            lines.append(f"| {what} | {k} | {v:.3f} |")
        if "loadavg_after" in r:
            lines.append(f"| {what} | load average after | {', '.join(f'{v:.2f}' for v in r['loadavg_after'])} |")
        if "peak_rss_mb_above_baseline" in r:
            lines.append(f"| {what} | peak RSS above baseline (MB) | {r['peak_rss_mb_above_baseline']:.0f} |")
        if "error" in r:
            lines.append(f"| {what} | error | {r['error'].splitlines()[-1] if r['error'] else '?'} |")
    if res["fast"].get("runs"):
        lines += ["", "Every measured `fast` run (the table above shows the fastest):", "",
                  "| run | wall s | CPU s (all threads) | load avg (1 min) before |", "|---|---|---|---|"]
        for i, r in enumerate(res["fast"]["runs"]):
            lines.append(f"| {i + 1} | {r['wall']:.3f} | {r['cpu']:.3f} | {r['load']:.2f} |")
    (OUT / "prune_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
