"""Batch conversion of a folder tree of scenes.

* Discovery: every ``*.ply`` below the input folder, except that a 3DGS training output folder
  (``OUT/point_cloud/iteration_N/point_cloud.ply``) counts as one scene: its latest iteration, with
  ``OUT/cameras.json`` used for fine-tuning views. Outputs mirror the input tree under OUTDIR
  (``a/b/scene.ply`` → ``OUTDIR/a/b/scene.sundae``; a training folder ``a/run1`` → ``OUTDIR/a/run1.sundae``).
* Resume: a scene whose bundle exists and passes every checksum is skipped (status ``skipped``)
  unless ``overwrite``. Bundles are written atomically, so an interrupted run (Ctrl-C, kill -9)
  leaves either a complete bundle or none; stale temporary files from a killed run are removed.
* Failures: one failing scene is reported (status ``failed`` and its one-line error) and the batch
  goes on; the exit status is non-zero if any scene failed.
* Parallelism (``jobs``): scenes run in separate processes. Memory rule: each scene is budgeted at
  ``MEM_BASE + MEM_PER_INPUT_BYTE × its PLY size`` (peaks measured for the no-fine-tune path are
  ~0.4 GB + 6× the file; fine-tuning adds rendering buffers, hence the larger factor), and a scene
  only starts while the budgets of the running scenes plus its own stay under 70 % of the memory
  available when the batch started. So ``--jobs 8`` on a small machine runs fewer at once, never more
  than the memory allows; a scene too big for the rule still runs, alone.
* Reports: a table on stdout at the end, ``OUTDIR/batch_report.csv`` and ``OUTDIR/batch_report.json``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import SundaeError
from .progress import Progress, info, is_quiet, set_quiet

MEM_BASE = 600e6
MEM_PER_INPUT_BYTE = {False: 8.0, True: 24.0}  # keyed by "fine-tuning on"
MEM_SHARE = 0.7
REPORT_NAMES = ("batch_report.csv", "batch_report.json")


@dataclass
class Scene:
    ply: Path
    output: Path
    name: str
    cameras: Optional[Path] = None


@dataclass
class SceneResult:
    scene: str
    status: str  # ok | skipped | failed
    gaussians_in: int = 0
    gaussians_kept: int = 0
    mb_in: float = 0.0
    mb_out: float = 0.0
    ratio: float = 0.0
    psnr: Optional[float] = None
    seconds: float = 0.0
    error: str = ""
    output: str = ""


@dataclass
class BatchResult:
    results: List[SceneResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "scenes": [asdict(r) for r in self.results],
                "counts": {s: sum(r.status == s for r in self.results) for s in ("ok", "skipped", "failed")}}


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------
_ITER = re.compile(r"^iteration_(\d+)$")


def _latest_iteration(point_cloud_dir: Path) -> Optional[Path]:
    best = None
    for d in point_cloud_dir.iterdir():
        m = _ITER.match(d.name)
        if m and (d / "point_cloud.ply").is_file():
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), d / "point_cloud.ply")
    return None if best is None else best[1]


def discover(root: Path, outdir: Path) -> List[Scene]:
    """Scenes under ``root`` in a deterministic order, each with its mirrored output path."""
    root = Path(root)
    outdir = Path(outdir).resolve()
    scenes: List[Scene] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames.sort()
        if d.resolve() == outdir or outdir in d.resolve().parents:
            dirnames[:] = []
            continue
        if (d / "point_cloud").is_dir():
            ply = _latest_iteration(d / "point_cloud")
            if ply is not None:
                rel = d.relative_to(root)
                name = str(rel) if str(rel) != "." else d.resolve().name
                out = outdir / (rel if str(rel) != "." else Path(name)).with_suffix("")
                out = out.parent / (out.name + ".sundae")
                cams = d / "cameras.json"
                scenes.append(Scene(ply, out, name, cams if cams.is_file() else None))
                dirnames[:] = []  # the training folder is one scene
                continue
        for f in sorted(filenames):
            if f.lower().endswith(".ply"):
                rel = (d / f).relative_to(root)
                scenes.append(Scene(d / f, outdir / rel.with_suffix(".sundae"), str(rel)))
    return scenes


def bundle_is_complete(path: Path) -> bool:
    """True when ``path`` is a bundle whose every section passes its checksum."""
    if not path.is_file():
        return False
    from .io.bundle import read_bundle

    try:
        read_bundle(path)
        return True
    except SundaeError:
        return False


def _remove_stale_temps(outdir: Path) -> int:
    from .io.bundle import TEMP_SUFFIX

    n = 0
    if outdir.is_dir():
        for p in outdir.rglob(f"*{TEMP_SUFFIX}"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


# ---------------------------------------------------------------------------------------------
# one scene (runs in a worker process when jobs > 1)
# ---------------------------------------------------------------------------------------------
def _run_scene(scene: Scene, options: Dict[str, Any], evaluate: bool, quiet: bool) -> SceneResult:
    set_quiet(quiet)
    t0 = time.perf_counter()
    try:
        from .api import compress

        scene.output.parent.mkdir(parents=True, exist_ok=True)
        cams = None
        if scene.cameras is not None and options.get("finetune"):
            from .render.cameras import load_cameras

            cams = load_cameras(scene.cameras)
        rep = compress(scene.ply, scene.output, overwrite=True, cameras=cams, **options)
        res = SceneResult(scene.name, "ok", rep.valid_count, rep.kept_count, rep.bytes_in / 1e6,
                          rep.bytes_out / 1e6, rep.ratio, output=str(scene.output))
        if evaluate:
            res.psnr = _evaluate(scene)
    except SundaeError as e:
        res = SceneResult(scene.name, "failed", error=str(e), output=str(scene.output))
    except MemoryError:
        res = SceneResult(scene.name, "failed", error="out of memory", output=str(scene.output))
    except Exception as e:  # keep the batch going; the report says what broke
        res = SceneResult(scene.name, "failed", error=f"internal error: {type(e).__name__}: {e}",
                          output=str(scene.output))
    res.seconds = time.perf_counter() - t0
    return res


def _evaluate(scene: Scene) -> float:
    from .api import load_bundle, load_scene
    from .evaluate import evaluate_and_report
    from .render.cameras import generate_cameras, load_cameras

    orig = load_scene(scene.ply)
    b = load_bundle(scene.output)
    post = None
    if b.net is not None:
        from .compensate import postprocess_from_bundle

        post = postprocess_from_bundle(b)
    cams = load_cameras(scene.cameras) if scene.cameras else generate_cameras(orig, n=8, width=320, height=240)
    return float(evaluate_and_report(orig, b.gaussians, cams, postprocess=post)["psnr"])


def _memory_available() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9


def scene_memory_budget(ply: Path, finetune: bool) -> float:
    return MEM_BASE + MEM_PER_INPUT_BYTE[bool(finetune)] * ply.stat().st_size


# ---------------------------------------------------------------------------------------------
# the batch
# ---------------------------------------------------------------------------------------------
def run_batch(input_dir, outdir, *, jobs: int = 1, overwrite: bool = False, evaluate: bool = False,
              as_json: bool = False, **options) -> BatchResult:
    """Convert every scene under ``input_dir`` into ``outdir``; see the module docstring."""
    input_dir, outdir = Path(input_dir), Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise SundaeError(f"{outdir} exists and is not a folder")
    scenes = discover(input_dir, outdir)
    if not scenes:
        raise SundaeError(f"{input_dir}: no .ply scenes found")
    outdir.mkdir(parents=True, exist_ok=True)
    stale = _remove_stale_temps(outdir)
    if stale:
        info(f"removed {stale} partial file(s) left by an interrupted run")

    result = BatchResult()
    todo: List[Scene] = []
    for s in scenes:
        if not overwrite and bundle_is_complete(s.output):
            result.results.append(SceneResult(s.name, "skipped", output=str(s.output)))
        else:
            todo.append(s)
    if len(todo) < len(scenes):
        info(f"{len(scenes) - len(todo)} scene(s) already complete, skipped (use --overwrite to redo)")

    quiet_workers = is_quiet() or jobs > 1
    with Progress(len(todo), "batch", unit=" scenes") as bar:
        def done(r: SceneResult):
            result.results.append(r)
            bar.update()
            if r.status == "failed":
                info(f"{r.scene}: failed: {r.error}")

        if jobs <= 1:
            for s in todo:
                info(f"[{len(result.results) + 1}/{len(scenes)}] {s.name}")
                done(_run_scene(s, options, evaluate, is_quiet()))
        else:
            _run_parallel(todo, options, evaluate, jobs, quiet_workers, done)

    order = {s.name: i for i, s in enumerate(scenes)}
    result.results.sort(key=lambda r: order.get(r.scene, 0))
    _write_reports(result, outdir)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
    return result


def _run_parallel(todo, options, evaluate, jobs, quiet, done):
    budget_total = MEM_SHARE * _memory_available()
    finetune = bool(options.get("finetune"))
    pending = list(todo)
    running = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            used = sum(running.values())
            while pending and len(running) < jobs:
                need = scene_memory_budget(pending[0].ply, finetune)
                if running and used + need > budget_total:
                    break
                s = pending.pop(0)
                fut = pool.submit(_run_scene, s, options, evaluate, quiet)
                running[fut] = need
                used += need
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                running.pop(fut)
                done(fut.result())


def format_table(result: BatchResult) -> str:
    head = f"{'scene':<32} {'Gaussians in → kept':>22} {'MB in → out':>17} {'ratio':>7} {'PSNR':>7} {'sec':>7}  status"
    lines = [head, "-" * len(head)]
    for r in result.results:
        psnr = f"{r.psnr:.2f}" if r.psnr is not None else "-"
        g = f"{r.gaussians_in:,} → {r.gaussians_kept:,}" if r.status == "ok" else "-"
        mb = f"{r.mb_in:.2f} → {r.mb_out:.3f}" if r.status == "ok" else "-"
        ratio = f"{r.ratio:.1f}x" if r.status == "ok" else "-"
        status = r.status + (f": {r.error}" if r.error else "")
        lines.append(f"{r.scene[-32:]:<32} {g:>22} {mb:>17} {ratio:>7} {psnr:>7} {r.seconds:>7.1f}  {status}")
    c = result.to_dict()["counts"]
    lines.append(f"{c['ok']} converted, {c['skipped']} skipped, {c['failed']} failed")
    return "\n".join(lines)


def _write_reports(result: BatchResult, outdir: Path) -> None:
    rows = [asdict(r) for r in result.results]
    csv_path, json_path = (outdir / n for n in REPORT_NAMES)
    tmp = csv_path.with_suffix(".csv.part")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SceneResult.__dataclass_fields__))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, csv_path)
    tmp = json_path.with_suffix(".json.part")
    tmp.write_text(json.dumps(result.to_dict(), indent=2))
    os.replace(tmp, json_path)
