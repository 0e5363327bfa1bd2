"""Speed of the CPU renderer: the native C tile rasteriser against the torch compositor, on the
renders fine-tuning and evaluation actually do, and fidelity against the independent reference
renderer (/work/shared/tools/refrender.py).

* teacher: no-grad renders of the full scene on 10 training-like views (ViewSampler draws, widths
  160-400 px as the CPU fine-tuning default) and on the 12 novel evaluation views (480x360);
  torch.set_num_threads 2 and 1 for the native path (threads follow torch's setting).
* iteration: one fine-tuning iteration at ratio 0.1 (the pipeline's prune step), per training-like
  view: teacher render, student forward (render + L1/SSIM loss) and backward, with either
  compositor for teacher and student.
The torch compositor, >10x slower, is timed on the first TORCH_VIEWS views of each set only.
* parity: one 320x240 orbit view, both compositors against refrender (PSNR) and each other.

    .venv/bin/python benchmarks/bench_render.py [--scenes donut playbot_125k] [--repeats 3]

Rows of other scenes from an earlier run (same format) are kept, so scenes can be run one at a time.

Run it under ``flock /tmp/sundae-bench.lock`` on a shared machine. Writes
benchmarks/results/render_speed.json and .md; timings are medians over repeats, wall and CPU
(process) seconds, with the load average before and after each scene.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# OpenMP threads that spin while waiting collapse on an oversubscribed (shared) machine; passive
# waiting costs nothing when the cores are free. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = ROOT.parent / "shared" / "assets"
REFRENDER = ROOT.parent / "shared" / "tools" / "refrender.py"
TORCH_VIEWS = 2  # views per set timed with the (slow) torch compositor


def _load():
    return [round(x, 2) for x in os.getloadavg()]


def _timed(fn, repeats, warm=True):
    """(median wall, median CPU) seconds of fn() over repeats, after one warm-up call if ``warm``."""
    if warm:
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return round(statistics.median(walls), 4), round(statistics.median(cpus), 4)


def _params(gs):
    p = gs.to_torch()
    p.pop("features", None)
    return p


def teacher_rows(gs, views, repeats):
    from sundae_compress.render import native, render

    params = _params(gs)
    rows = []
    for label, cams in views.items():
        imgs = {}
        for comp, threads in (("native", 2), ("native", 1), ("torch", 2)):
            torch.set_num_threads(threads)
            # the torch compositor is >10x slower: the first TORCH_VIEWS views, one timed run, no
            # warm-up (it needs none); per-view times are comparable
            sub = cams if comp == "native" else cams[:TORCH_VIEWS]

            def run():
                with torch.no_grad(), native.use(comp == "native"):
                    return [render(params, c, backend="torch").rgb for c in sub]

            wall, cpu = _timed(run, repeats if comp == "native" else 1, warm=comp == "native")
            imgs.setdefault(comp, run())
            rows.append({"views": label, "n_views": len(sub), "compositor": comp, "threads": threads,
                         "wall_s": wall, "cpu_s": cpu, "per_view_s": round(wall / len(sub), 4),
                         "per_view_cpu_s": round(cpu / len(sub), 4)})
        diff = max(float((a - b).abs().max()) for a, b in zip(imgs["native"], imgs["torch"]))
        for r in rows[-3:]:
            r["max_abs_diff_native_vs_torch"] = diff
    torch.set_num_threads(2)
    return rows


def iteration_rows(gs, cams, repeats):
    """Teacher / student forward / backward of one fine-tuning step (ratio 0.1, no net)."""
    from sundae_compress.api import prune_scene
    from sundae_compress.compensate.loop import image_loss
    from sundae_compress.compensate.tensors import TorchGaussians
    from sundae_compress.metrics import ssim
    from sundae_compress.render import native, render

    torch.set_num_threads(2)
    t = time.perf_counter()
    pruned = prune_scene(gs, ratio=0.1)
    t_prune = time.perf_counter() - t
    orig = _params(gs)
    student = TorchGaussians.from_set(pruned, 0, "cpu")
    bg = torch.zeros(3)
    rows = []
    for comp in ("native", "torch"):
        tt, tf, tb = [], [], []
        with native.use(comp == "native"):
            for rep in range(repeats + 1 if comp == "native" else 2):
                for cam in (cams if comp == "native" else cams[:TORCH_VIEWS]):
                    t0, c0 = time.perf_counter(), time.process_time()
                    with torch.no_grad():
                        target = render(orig, cam, background=bg, backend="torch").rgb.clamp(0, 1)
                    t1, c1 = time.perf_counter(), time.process_time()
                    out = render(student.render_input(), cam, background=bg, backend="torch")
                    loss = image_loss(out.rgb, target, 0.2, ssim)
                    t2, c2 = time.perf_counter(), time.process_time()
                    loss.backward()
                    t3, c3 = time.perf_counter(), time.process_time()
                    for p in student.render_input().values():
                        p.grad = None
                    if rep > 0:  # the first pass over the views is the warm-up
                        tt.append((t1 - t0, c1 - c0))
                        tf.append((t2 - t1, c2 - c1))
                        tb.append((t3 - t2, c3 - c2))
        n = len(tt)

        def mean(x, i):
            return round(sum(v[i] for v in x) / n, 4)

        rows.append({"compositor": comp, "n_original": len(gs), "n_student": len(pruned), "iterations": n,
                     "teacher_s": mean(tt, 0), "student_forward_s": mean(tf, 0), "student_backward_s": mean(tb, 0),
                     "iteration_s": round(mean(tt, 0) + mean(tf, 0) + mean(tb, 0), 4),
                     "teacher_cpu_s": mean(tt, 1), "student_forward_cpu_s": mean(tf, 1),
                     "student_backward_cpu_s": mean(tb, 1),
                     "iteration_cpu_s": round(mean(tt, 1) + mean(tf, 1) + mean(tb, 1), 4), "prune_s": round(t_prune, 2)})
    return rows


def parity_row(gs, name):
    from sundae_compress.metrics import psnr
    from sundae_compress.render import Camera, native, render

    spec = importlib.util.spec_from_file_location("refrender", REFRENDER)
    rr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rr)
    G = {"means": torch.from_numpy(gs.means), "quats": torch.from_numpy(gs.quats),
         "scales": torch.from_numpy(gs.scales), "opac": torch.from_numpy(gs.opacities),
         "sh": torch.from_numpy(gs.sh)}
    V = rr.orbit_cameras(G, n=8)[0]
    W, H = 320, 240
    f = 300.0
    ref = rr.render(G, V, f, f, W / 2, H / 2, W, H)
    cam = Camera(V.double().numpy(), f, f, W / 2, H / 2, W, H)
    out = {}
    for comp in ("native", "torch"):
        with torch.no_grad(), native.use(comp == "native"):
            out[comp] = render(_params(gs), cam, backend="torch").rgb.clamp(0, 1)
    return {"view": "refrender orbit 0, 320x240",
            "psnr_native_vs_refrender_db": round(float(psnr(out["native"], ref)), 2),
            "psnr_torch_vs_refrender_db": round(float(psnr(out["torch"], ref)), 2),
            "max_abs_diff_native_vs_torch": float((out["native"] - out["torch"]).abs().max())}


def bench(scene, repeats):
    from sundae_compress.compensate.config import FinetuneConfig
    from sundae_compress.io.ply import read_ply
    from sundae_compress.render.cameras import ViewFrame, ViewSampler, novel_views

    gs = read_ply(ASSETS / f"{scene}.ply")
    frame = ViewFrame.of(gs)
    widths = FinetuneConfig.build(None).resolved(False).train_widths()
    sampler = ViewSampler(frame, seed=0, widths=widths)
    train_cams = [sampler.sample() for _ in range(10)]
    load0 = _load()
    res = {"scene": scene, "n_gaussians": len(gs), "sh_degree": gs.sh_degree, "train_widths": list(widths),
           "train_sizes": [f"{c.width}x{c.height}" for c in train_cams], "load_avg_before": load0}
    res["teacher"] = teacher_rows(gs, {"10 training-like views": train_cams,
                                       "12 novel views 480x360": novel_views(frame)}, repeats)
    res["iteration"] = iteration_rows(gs, train_cams, 2)
    res["parity"] = parity_row(gs, scene)
    res["load_avg_after"] = _load()
    return res


def full_run_markdown(f):
    """The full default run (recorded by hand from /usr/bin/time -v, see the JSON's "full_run")."""
    return ["", "## Full default run", "",
            f"`{f['command']}` (code at {f['commit']}): wall {f['wall_s']} s, CPU {f['cpu_s']} s "
            f"(user {f['user_s']} + sys {f['sys_s']}), peak RSS {f['peak_rss_mb']} MB, load {f['load_before']} -> "
            f"{f['load_after']}; {f['summary']}", "", f["note"]]


def to_markdown(results, machine, full_run=None):
    lines = ["# Renderer speed on CPU: native C rasteriser vs torch compositor", "",
             f"Machine: {machine['cpu_count']} CPU cores, torch {machine['torch']}, {machine['platform']}, "
             f"OMP_WAIT_POLICY={machine['OMP_WAIT_POLICY']}. Shared machine: load averages (1/5/15 min) are "
             "given per scene; wall and CPU (process) seconds are medians over repeats.", "",
             "## Teacher renders (full scene, no gradient)", "",
             f"The torch compositor is timed on the first {TORCH_VIEWS} views of each set only (per-view "
             "columns compare).", "",
             "| scene | views | compositor | threads | timed views | wall (s) | CPU (s) | per view wall (s) | "
             "per view CPU (s) | max abs diff vs torch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for t in r["teacher"]:
            lines.append(f"| {r['scene']} ({r['n_gaussians']:,}) | {t['views']} | {t['compositor']} | {t['threads']} | "
                         f"{t['n_views']} | {t['wall_s']} | {t['cpu_s']} | {t['per_view_s']} | {t['per_view_cpu_s']} | "
                         f"{t['max_abs_diff_native_vs_torch']:.1e} |")
    lines += ["", "## One fine-tuning iteration at ratio 0.1 (mean per training-like view, 2 threads)", "",
              f"Native: the 10 views, 2 passes after a warm-up pass; torch: the first {TORCH_VIEWS} views, one "
              "pass after a warm-up pass.", "",
              "Wall seconds, CPU (process, both threads) seconds in brackets.", "",
              "| scene | student | compositor | teacher | student fwd | student bwd | iteration |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for t in r["iteration"]:
            lines.append(f"| {r['scene']} | {t['n_student']:,} | {t['compositor']} | {t['teacher_s']} ({t['teacher_cpu_s']}) | "
                         f"{t['student_forward_s']} ({t['student_forward_cpu_s']}) | "
                         f"{t['student_backward_s']} ({t['student_backward_cpu_s']}) | "
                         f"{t['iteration_s']} ({t['iteration_cpu_s']}) |")
    lines += ["", "## Parity (320x240 orbit view)", "",
              "| scene | native vs refrender | torch vs refrender | max abs diff native vs torch |", "|---|---|---|---|"]
    for r in results:
        p = r["parity"]
        lines.append(f"| {r['scene']} | {p['psnr_native_vs_refrender_db']} dB | {p['psnr_torch_vs_refrender_db']} dB | "
                     f"{p['max_abs_diff_native_vs_torch']:.1e} |")
    lines += ["", "Load averages: " + "; ".join(f"{r['scene']} {r['load_avg_before']} -> {r['load_avg_after']}"
                                                 for r in results),
              "", "Training-like view sizes: " + "; ".join(f"{r['scene']}: {', '.join(r['train_sizes'])}"
                                                          for r in results),
              "", "The teacher and the student use the same compositor in each iteration row; the student "
              "forward includes the L1 + SSIM loss, the backward goes through projection, SH and the "
              "compositor (C backward on the native path)."]
    if full_run:
        lines += full_run_markdown(full_run)
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", nargs="+", default=["donut", "playbot_125k"])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    results = [bench(s, a.repeats) for s in a.scenes]
    machine = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform(),
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    full_run = None
    try:  # keep the other scenes of an earlier run in this format (one scene per locked run)
        old = json.loads((out / "render_speed.json").read_text())
        full_run = old.get("full_run")
        done = {r["scene"] for r in results}
        results = [r for r in old["results"] if "teacher" in r and r["scene"] not in done] + results
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    doc = {"machine": machine, "results": results}
    if full_run:
        doc["full_run"] = full_run
    (out / "render_speed.json").write_text(json.dumps(doc, indent=2))
    (out / "render_speed.md").write_text(to_markdown(results, machine, full_run))
    print(to_markdown(results, machine, full_run))


if __name__ == "__main__":
    main()
