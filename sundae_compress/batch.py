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
* Parallelism (``jobs``): scenes run in separate (spawned) worker processes. Memory rule: each scene
  is budgeted at ``MEM_BASE + MEM_PER_INPUT_BYTE × its PLY size``, and a scene only starts while the
  budgets of the running scenes plus its own stay under 70 % of the memory available when the
  batch started. So ``--jobs 8`` on a small machine runs fewer at once, never more than the memory
  allows; a scene too big for the rule still runs, alone. Measured peak RSS of the no-fine-tune
  path (fresh process, ``ru_maxrss``, default ratio 0.1): donut 2.56 MB PLY → 266 MB, guitar
  5.09 MB → 279 MB, playbot_125k 19.0 MB → 411 MB, i.e. ≈ 245 MB + 8.8 × the file; the rule uses
  300 MB + 10 ×. The fine-tuning factors are not measured yet (rendering buffers and the teacher
  renders dominate; 600 MB + 24 × is a conservative guess). Workers die with the batch process
  (``PR_SET_PDEATHSIG`` on Linux), so a killed batch leaves no orphan writing into OUTDIR.
* Locking: ``OUTDIR/.sundae-batch.lock`` (``flock``) stops two batches writing the same folder;
  the kernel drops it when the process dies, so a killed run never blocks the next one, and the
  file is deleted when a batch ends (finished or interrupted).
* Reports: a table on stdout at the end, ``OUTDIR/batch_report.csv`` and ``OUTDIR/batch_report.json``
  (with the worker that converted each scene and how long it took); after Ctrl-C / SIGTERM they
  say ``"ok": false, "interrupted": true`` and list the unfinished scenes.
* Many machines: ``client=`` (a ``dask.distributed.Client``) runs every scene as a task on a Dask
  cluster instead (:mod:`sundae_compress.batch_dask`); discovery, resume and the reports stay here.
* Storage: the input folder and OUTDIR may be fsspec URLs (:mod:`sundae_compress.storage`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import socket
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import storage
from .errors import SundaeError
from .io.atomic import temp_glob
from .progress import Progress, info, is_quiet, set_quiet
from .storage import Location

MEM_BASE = {False: 300e6, True: 600e6}  # keyed by "fine-tuning on"
MEM_PER_INPUT_BYTE = {False: 10.0, True: 24.0}
MEM_SHARE = 0.7
REPORT_NAMES = ("batch_report.csv", "batch_report.json")
LOCK_NAME = ".sundae-batch.lock"

#: the temporary files of atomic writes of bundles (``.NAME.sundae.<random>.tmp``), left only by a killed run
TEMP_GLOB = temp_glob("*.sundae")


@dataclass
class Scene:
    ply: Location  # a Path, or a URL string for remote storage
    output: Location
    name: str
    cameras: Optional[Location] = None


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
    worker: str = ""  # host:pid, or the Dask worker's address
    attempts: int = 0  # > 1 when a worker died under the scene and another one redid it


@dataclass
class BatchResult:
    results: List[SceneResult] = field(default_factory=list)
    #: Ctrl-C / SIGTERM stopped the batch; ``unfinished``: the scenes it did not finish (running ones
    #: are stopped; a bundle that completed at that very moment is kept and skipped by the next run)
    interrupted: bool = False
    unfinished: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status != "failed" for r in self.results)

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "interrupted": self.interrupted, "scenes": [asdict(r) for r in self.results],
                "unfinished": list(self.unfinished),
                "counts": {s: sum(r.status == s for r in self.results) for s in ("ok", "skipped", "failed")}}


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------
_ITER = re.compile(r"^iteration_(\d+)$")


def _latest_iteration(point_cloud_dir: Location) -> Optional[Location]:
    best = None
    for name in storage.listdir(point_cloud_dir):
        m = _ITER.match(name)
        ply = storage.join(point_cloud_dir, name, "point_cloud.ply")
        if m and storage.isfile(ply):
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), ply)
    return None if best is None else best[1]


def discover(root, outdir, suffix: str = ".sundae") -> List[Scene]:
    """Scenes under ``root`` (a folder or folder URL) in a deterministic order, each with its
    mirrored output path under ``outdir`` (ending in ``suffix``, the output format's extension)
    and, for a training folder, its cameras (:func:`~sundae_compress.api.find_cameras_for`)."""
    from .api import find_cameras_for

    root = storage.normalize(root)
    outdir = storage.normalize(outdir)
    if isinstance(outdir, Path):
        outdir = outdir.resolve()
    scenes: List[Scene] = []
    for d, dirnames, filenames in storage.walk(root):
        dirnames.sort()
        if storage.inside(d, outdir):
            dirnames[:] = []
            continue
        if "point_cloud" in dirnames:
            ply = _latest_iteration(storage.join(d, "point_cloud"))
            if ply is not None:
                rel = storage.relative(d, root)
                name = rel or storage.name(storage.absolute(d))
                out = storage.join(outdir, name + suffix)  # keep dots in folder names
                if isinstance(ply, Path):
                    cams = find_cameras_for(ply)
                else:
                    cams = storage.join(d, "cameras.json")
                    cams = cams if storage.isfile(cams) else None
                scenes.append(Scene(ply, out, name, cams))
                dirnames[:] = []  # the training folder is one scene
                continue
        for f in sorted(filenames):
            if f.lower().endswith(".ply"):
                rel = storage.relative(storage.join(d, f), root)
                scenes.append(Scene(storage.join(d, f), storage.join(outdir, rel[:-4] + suffix), rel))
    return scenes


def _complete_bundle_info(path: Location, source: Optional[Location] = None) -> Optional[dict]:
    """:func:`~sundae_compress.io.bundle.inspect_bundle` of ``path`` when it is a complete bundle
    (every section passes its checksum) made from a file of ``source``'s size; else None."""
    if not storage.isfile(path):
        return None
    from .io.bundle import inspect_bundle

    try:
        with storage.local_file(path) as local:
            d = inspect_bundle(local)
    except SundaeError:
        return None
    if source is not None:
        src = d.get("source") or {}
        try:
            if src.get("bytes") is not None and src["bytes"] != storage.size(source):
                return None  # the input changed since: convert it again
        except OSError:
            return None
    return d


def _complete_scene_info(path: Location, source: Optional[Location] = None) -> Optional[dict]:
    """Like :func:`_complete_bundle_info` for any output format: a bundle is checked section by
    section; another format is complete when it reads back (its writes are atomic). None if not."""
    from .io.formats import format_of_path, read_scene

    if format_of_path(storage.name(path)) in (None, "sundae"):
        return _complete_bundle_info(path, source)
    if not storage.isfile(path):
        return None
    try:
        with storage.local_file(path) as local:
            n = len(read_scene(local))
        size = storage.size(path)
    except (SundaeError, OSError):
        return None
    return {"count": n, "file_bytes": size,
            "source": {"bytes": storage.size(source) if source is not None and storage.isfile(source) else None}}


def bundle_is_complete(path, source=None) -> bool:
    """True when ``path`` is a bundle whose every section passes its checksum (and, given the
    ``source`` PLY, whose recorded source size matches it)."""
    return _complete_bundle_info(storage.normalize(path), None if source is None else storage.normalize(source)) \
        is not None


def _skipped_result(scene: Scene, d: dict) -> SceneResult:
    src = d.get("source") or {}
    mb_in = (src.get("bytes") or 0) / 1e6
    valid = src.get("valid") if isinstance(src.get("valid"), int) else src.get("count")  # the bundle records "valid"
    return SceneResult(scene.name, "skipped", int(valid or 0), int(d["count"]),
                       mb_in, d["file_bytes"] / 1e6, mb_in * 1e6 / d["file_bytes"] if d["file_bytes"] else 0.0,
                       output=str(scene.output))


def _mark_collisions(scenes: List[Scene]) -> Dict[str, str]:
    """Scenes whose output path another (earlier) scene already claims -> error message."""
    seen: Dict[Path, str] = {}
    bad = {}
    for s in scenes:
        key = Path(os.path.normcase(str(s.output)))
        if key in seen:
            bad[s.name] = f"output {s.output} is also the output of {seen[key]}; rename one of them"
        else:
            seen[key] = s.name
    return bad


class _Lock:
    """An exclusive ``flock`` on ``OUTDIR/.sundae-batch.lock``: the kernel drops it when the process
    dies (so a killed run never blocks the next one), and :meth:`release` deletes the file, so a
    finished or interrupted batch leaves nothing behind."""

    def __init__(self, outdir: Path):
        import fcntl

        self.path = outdir / LOCK_NAME
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise SundaeError(f"{outdir}: another sundae-compress batch is writing to this folder") from None
            try:  # the holder we waited behind may have deleted the file: lock the one on disk
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        self.file = f

    def release(self) -> None:
        try:
            os.unlink(self.path)  # while still holding the lock: nobody else owns this file
        except OSError:
            pass
        self.file.close()


def _lock(outdir: Path) -> Optional[_Lock]:
    try:
        return _Lock(outdir)
    except ImportError:  # pragma: no cover - not on POSIX
        return None


def _remove_stale_temps(outdir: Location, suffix: str = ".sundae", names=None) -> int:
    """Remove the temporary files an interrupted write left below ``outdir`` (given ``names``:
    only those of these output file names; else also the reports' own)."""
    n = storage.remove_matching(outdir, TEMP_GLOB, names)
    if suffix != ".sundae":
        n += storage.remove_matching(outdir, temp_glob("*" + suffix), names)
    if names is None:
        n += sum(storage.remove_matching(outdir, temp_glob(r), recursive=False) for r in REPORT_NAMES)
    return n


# ---------------------------------------------------------------------------------------------
# one scene (runs in a worker process when jobs > 1)
# ---------------------------------------------------------------------------------------------
def _run_scene(scene: Scene, options: Dict[str, Any], evaluate: bool, quiet: bool) -> SceneResult:
    set_quiet(quiet)
    t0 = time.perf_counter()
    work = None
    local = scene
    try:
        from .api import compress

        if storage.is_url(scene.ply) or storage.is_url(scene.output) or storage.is_url(scene.cameras):
            work = storage.temp_dir()  # remote storage: work on local copies, publish the bundle at the end
        with contextlib.ExitStack() as stack:
            if work is not None:
                ply = stack.enter_context(storage.local_copy(scene.ply, work))
                cams = None if scene.cameras is None else stack.enter_context(storage.local_copy(scene.cameras, work))
                out = scene.output if isinstance(scene.output, Path) else work / storage.name(scene.output)
                local = Scene(ply, out, scene.name, cams)
            storage.makedirs(storage.parent(scene.output))
            rep = compress(local.ply, local.output, overwrite=True, cameras=local.cameras, notify=info, **options)
            if local.output != scene.output:
                storage.publish(local.output, scene.output)
            res = SceneResult(scene.name, "ok", rep.valid_count, rep.kept_count, rep.bytes_in / 1e6,
                              rep.bytes_out / 1e6, rep.ratio, output=str(scene.output))
            if evaluate:
                try:
                    res.psnr = _evaluate(local)
                except Exception as e:  # the bundle is fine; say why there is no PSNR
                    res.error = f"evaluation failed: {type(e).__name__}: {e}".split("\n")[0][:300]
    except SundaeError as e:
        res = SceneResult(scene.name, "failed", error=_remote_names(str(e), local, scene), output=str(scene.output))
    except MemoryError:
        res = SceneResult(scene.name, "failed", error="out of memory", output=str(scene.output))
    except Exception as e:  # keep the batch going; the report says what broke
        res = SceneResult(scene.name, "failed", error=f"internal error: {type(e).__name__}: {e}",
                          output=str(scene.output))
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    res.seconds = time.perf_counter() - t0
    res.worker = f"{socket.gethostname()}:{os.getpid()}"
    res.attempts = 1
    return res


def _remote_names(message: str, local: Scene, scene: Scene) -> str:
    """An error about a local working copy, told with the user's URLs."""
    for a, b in ((local.ply, scene.ply), (local.output, scene.output), (local.cameras, scene.cameras)):
        if a is not None and a != b:
            message = message.replace(str(a), str(b))
    return message


def _evaluate(scene: Scene) -> float:
    from .api import evaluate_output, evaluation_views, load_scene

    orig = load_scene(scene.ply)
    near, novel, _ = evaluation_views(orig, scene.ply, cameras=scene.cameras)
    return float(evaluate_output(orig, scene.output, near, novel)["psnr"])  # novel-view PSNR


def _memory_available() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9


def scene_memory_budget(ply: Location, finetune: bool) -> float:
    """Bytes of memory one scene is budgeted (see the module docstring)."""
    try:
        size = storage.size(ply)
    except OSError:
        size = 0
    return MEM_BASE[bool(finetune)] + MEM_PER_INPUT_BYTE[bool(finetune)] * size


def _worker_init(quiet: bool) -> None:
    set_quiet(quiet)
    try:  # die with the batch process (kill -9 included) instead of running on as an orphan
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass


# ---------------------------------------------------------------------------------------------
# the batch
# ---------------------------------------------------------------------------------------------
def run_batch(input_dir, outdir, *, jobs: int = 1, overwrite: bool = False, evaluate: bool = False,
              as_json: bool = False, client=None, **options) -> BatchResult:
    """Convert every scene under ``input_dir`` into ``outdir``; see the module docstring.

    ``input_dir`` and ``outdir`` are folders or fsspec folder URLs. ``client``: a
    ``dask.distributed.Client`` to run the scenes on its cluster (then ``jobs`` is unused).
    ``options`` go to :func:`sundae_compress.api.compress` (ratio, count, finetune, seed, ...).
    Prints the table (or, with ``as_json``, only the JSON) on stdout and writes the reports."""
    from .io.formats import FORMATS, resolve_format

    input_dir, outdir = storage.normalize(input_dir), storage.normalize(outdir)
    if not storage.isdir(input_dir):
        raise SundaeError(f"{input_dir}: not a folder")
    if storage.exists(outdir) and not storage.isdir(outdir):
        raise SundaeError(f"{outdir} exists and is not a folder")
    options["format"] = resolve_format(None, options.get("format"))
    scenes = discover(input_dir, outdir, FORMATS[options["format"]].suffix)
    if not scenes:
        raise SundaeError(f"{input_dir}: no .ply scenes found")
    try:
        storage.makedirs(outdir)
    except OSError as e:
        raise SundaeError(f"cannot create {outdir}: {e.strerror or e}") from None
    lock = _lock(outdir) if isinstance(outdir, Path) else None  # object stores have no flock
    previous = _sigterm_interrupts()
    try:
        return _run_locked(scenes, outdir, jobs, overwrite, evaluate, as_json, options, client)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
        if lock is not None:
            lock.release()


def _sigterm_interrupts():
    """Make SIGTERM stop the batch like Ctrl-C (report, lock removed); returns the previous handler
    (None when not in the main thread, where handlers cannot be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)


def plan_batch(scenes: List[Scene], outdir: Location, overwrite: bool, suffix: str = ".sundae"):
    """Resume: remove stale temporary files, mark output collisions as failed and complete
    outputs as skipped. Returns ``(BatchResult with those rows, scenes still to convert)``."""
    stale = _remove_stale_temps(outdir, suffix)
    if stale:
        info(f"removed {stale} partial file(s) left by an interrupted run")

    result = BatchResult()
    collisions = _mark_collisions(scenes)
    todo: List[Scene] = []
    for s in scenes:
        if s.name in collisions:
            result.results.append(SceneResult(s.name, "failed", error=collisions[s.name], output=str(s.output)))
            continue
        d = None if overwrite else _complete_scene_info(s.output, s.ply)
        if d is not None:
            result.results.append(_skipped_result(s, d))
        else:
            todo.append(s)
    skipped = sum(r.status == "skipped" for r in result.results)
    if skipped:
        info(f"{skipped} scene(s) already complete, skipped (use --overwrite to redo)")
    return result, todo


def _mark_interrupted(result: BatchResult, todo: List[Scene]) -> None:
    """After Ctrl-C / SIGTERM: every scene that was to be converted and never reported back is
    ``unfinished``, unless its bundle is there and complete all the same (a worker finished it as
    the batch stopped: an ``ok`` row without timing)."""
    result.interrupted = True
    finished = {r.scene for r in result.results}
    for s in todo:
        if s.name in finished:
            continue
        try:
            d = _complete_scene_info(s.output, s.ply)
        except Exception:
            d = None
        if d is not None:
            r = _skipped_result(s, d)
            r.status, r.error = "ok", "finished as the batch was interrupted (no timing)"
            result.results.append(r)
        else:
            result.unfinished.append(s.name)


def _run_locked(scenes, outdir, jobs, overwrite, evaluate, as_json, options, client=None) -> BatchResult:
    from .io.formats import FORMATS

    suffix = FORMATS[options.get("format") or "sundae"].suffix
    result, todo = plan_batch(scenes, outdir, overwrite, suffix)
    if client is not None:
        from .batch_dask import describe_cluster

        info(f"{len(todo)} scene(s) to convert on {describe_cluster(client)}")
    else:
        info(f"{len(todo)} scene(s) to convert" + (f", up to {jobs} at a time" if jobs > 1 and len(todo) > 1 else ""))

    order = {s.name: i for i, s in enumerate(scenes)}

    def finish() -> BatchResult:
        result.results.sort(key=lambda r: order.get(r.scene, 0))
        _write_reports(result, outdir)
        return result

    try:
        with Progress(len(todo), "batch", unit=" scenes") as bar:
            def done(r: SceneResult):
                result.results.append(r)
                bar.update()
                if r.status == "failed":
                    info(f"{r.scene}: failed: {r.error}")
                elif not bar.tty:
                    info(f"{r.scene}: {r.status} in {r.seconds:.1f} s" + (f" on {r.worker}" if client else ""))

            if client is not None:
                from .batch_dask import run_on_client

                finetune = bool(options.get("finetune"))
                run_on_client(client, todo, options, evaluate, done, run_scene=_run_scene, note=info,
                              budget=lambda s: scene_memory_budget(s.ply, finetune),
                              failed=lambda s, msg: SceneResult(s.name, "failed", error=msg, output=str(s.output)))
                # a worker killed mid-write leaves its temporary file; the redo wrote the bundle
                _remove_stale_temps(outdir, suffix, names=[storage.name(s.output) for s in todo])
            elif jobs <= 1 or len(todo) <= 1:
                for i, s in enumerate(todo, 1):
                    info(f"[{i}/{len(todo)}] {s.name}")
                    done(_run_scene(s, options, evaluate, is_quiet()))
            else:
                _run_parallel(todo, options, evaluate, jobs, done)
    except BaseException:  # Ctrl-C / SIGTERM: still leave a report of what was done
        _mark_interrupted(result, todo)
        try:
            finish()
        except Exception:
            pass
        raise
    finish()
    if as_json:
        print(json.dumps(result.to_dict(), indent=2), flush=True)
    else:
        print(format_table(result), flush=True)
    return result


def _run_parallel(todo, options, evaluate, jobs, done):
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    budget_total = MEM_SHARE * _memory_available()
    finetune = bool(options.get("finetune"))
    pending = list(todo)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads / torch
    while pending:
        running = {}
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=ctx,
                                   initializer=_worker_init, initargs=(True,))
        try:
            while pending or running:
                used = sum(need for _, need in running.values())
                while pending and len(running) < jobs:
                    need = scene_memory_budget(pending[0].ply, finetune)
                    if running and used + need > budget_total:
                        break
                    s = pending[0]
                    running[pool.submit(_run_scene, s, options, evaluate, True)] = (s, need)
                    pending.pop(0)
                    used += need
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    s, _ = running.pop(fut)
                    try:
                        done(fut.result())
                    except BrokenProcessPool:
                        done(SceneResult(s.name, "failed", error="the worker process died (out of memory?)",
                                         output=str(s.output)))
                    except Exception as e:  # e.g. a result that could not be sent back
                        done(SceneResult(s.name, "failed", error=f"internal error: {type(e).__name__}: {e}",
                                         output=str(s.output)))
        except BrokenProcessPool:
            pass  # pending scenes go to a fresh pool
        except BaseException:  # interrupted: stop the workers now (their writes are atomic)
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


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


def _write_reports(result: BatchResult, outdir: Location) -> None:
    rows = [asdict(r) for r in result.results]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(SceneResult.__dataclass_fields__))
    w.writeheader()
    w.writerows(rows)
    csv_path, json_path = (storage.join(outdir, n) for n in REPORT_NAMES)
    storage.write_text_atomic(csv_path, buf.getvalue())
    storage.write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2))
