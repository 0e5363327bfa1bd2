"""The folder batch on a Dask cluster: every scene is one task on ``dask.distributed``.

:mod:`sundae_compress.batch` keeps everything that happens once per batch, on the client:
discovery, resume (skip complete bundles), the reports. This module only turns the scenes still to
convert into tasks and their outcomes back into :class:`~sundae_compress.batch.SceneResult` rows
(with the worker's address); batch.py hands it the per-scene functions, so it imports nothing of
batch.py. It needs the optional extra: ``pip install 'sundae-compress[dask]'``.

* **Where scenes run**: a task runs :func:`sundae_compress.batch._run_scene` on a worker, the
  same function the local batch runs, so a bundle is byte for byte the one a single machine
  writes. Paths must mean the same on every worker (a shared folder) or be fsspec URLs.
* **Memory**: workers that advertise a ``memory`` resource (bytes: ``dask worker ADDRESS
  --resources memory=16e9``) run a scene only while the budgets of their running scenes
  (:func:`~sundae_compress.batch.scene_memory_budget`) fit in it; a budget larger than every
  worker's is capped at the largest, so that scene still runs, alone. ``local:N`` gives each of
  its N workers ``memory_share`` (batch.py: 70 %) of the memory available divided by N. Without the resource, Dask's own
  per-worker memory limit is all there is.
* **GPU**: with fine-tuning, when some worker advertises a ``GPU`` resource, the scenes ask for
  ``GPU=1`` and so run only on those workers (the trainer uses CUDA when it sees it).
* **Faults**: a scene that fails (bad input, a bug) returns a ``failed`` row from the task; it is
  not retried. A worker that dies under a scene makes the scheduler run it again on another one,
  up to ``distributed.scheduler.allowed-failures`` times (``local:N`` sets
  :data:`ALLOWED_FAILURES`); after that the scene is reported failed. Bundles are written
  atomically, so a dead attempt leaves at most a temporary file, which the batch removes.
  ``attempts`` in the report counts the runs (1 + the times a worker died under the scene).
* **Ctrl-C** on the client cancels every task still queued or running, and the batch writes its
  report (``interrupted``, those scenes in ``unfinished``). A scene already running cannot be
  stopped mid-way: it may still finish its bundle (atomically) after the report; the next run
  then skips it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Dict, Iterator, List, Optional

from .errors import SundaeError

INSTALL_HINT = "pip install 'sundae-compress[dask]'"
ALLOWED_FAILURES = 2  # local:N: a scene is tried at most 3 times when its workers keep dying
MEMORY_RESOURCE = "memory"
GPU_RESOURCE = "GPU"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_TRIM_VAR = "MALLOC_TRIM_THRESHOLD_"


def _require():
    try:
        import distributed
    except ImportError:
        raise SundaeError(f"--scheduler needs Dask, which is not installed: {INSTALL_HINT}") from None
    return distributed


def _parse_local(address: str) -> Optional[int]:
    if not address.startswith("local:"):
        return None
    try:
        n = int(address[len("local:"):])
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise SundaeError(f"--scheduler {address}: expected local:N with N worker processes, 1 <= N <= 256")
    return n


@contextlib.contextmanager
def connect(address: str, memory_share: float = 0.7) -> Iterator:
    """A ``dask.distributed.Client``: ``local:N`` starts a ``LocalCluster`` of N worker processes
    (one task at a time each, with cores/N math-library threads; closed on exit); anything else is
    the address of a running scheduler."""
    n = _parse_local(address)
    distributed = _require()
    import dask

    if n is not None:
        import psutil  # a dependency of distributed

        # Dask starts workers with OMP/MKL/OpenBLAS at 1 thread: give each its share of the cores.
        # It also sets MALLOC_TRIM_THRESHOLD_=65536, which made a scene ~1.7x slower (every large
        # array mmapped afresh; benchmarks/results/batch_dask.md): leave glibc's default.
        # (Its nannies set these in this process's environment too, for good: put them back after.)
        threads = max(1, (os.cpu_count() or 1) // n)
        saved = {v: os.environ.get(v) for v in _THREAD_VARS + (_TRIM_VAR,)}
        env = {f"distributed.nanny.pre-spawn-environ.{v}": threads for v in _THREAD_VARS}
        env[f"distributed.nanny.pre-spawn-environ.{_TRIM_VAR}"] = None
        try:
            with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES, **env}):
                try:
                    cluster = distributed.LocalCluster(
                        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.CRITICAL,
                        resources={MEMORY_RESOURCE: memory_share * psutil.virtual_memory().available / n})
                except (OSError, RuntimeError) as e:
                    raise SundaeError(f"could not start a local Dask cluster of {n} workers: {e}") from None
            try:
                with distributed.Client(cluster) as client:
                    yield client
            finally:
                cluster.close()
        finally:
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old
        return
    try:
        client = distributed.Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        raise SundaeError(f"cannot reach the Dask scheduler at {address}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    try:
        yield client
    finally:
        client.close()


def describe_cluster(client) -> str:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return f"the Dask cluster at {client.scheduler.address} ({len(workers)} workers, {threads} threads)"


def _scene_task(run_scene, scene, options, evaluate, client_process):
    """Runs on a worker: one scene (``run_scene``: batch.py's), and who did it. Quiet, unless the
    worker is a thread of the client's own process (then its setting is the client's)."""
    import socket

    from distributed import get_worker

    from .progress import is_quiet

    here = (socket.gethostname(), os.getpid())
    result = run_scene(scene, options, evaluate, is_quiet() if here == tuple(client_process) else True)
    try:
        result.worker = get_worker().address
    except ValueError:  # pragma: no cover - not inside a worker
        pass
    return result


def _task_resources(workers: Dict[str, dict], finetune: bool):
    """``(memory cap or None, whether to ask for a GPU)`` from what the workers advertise."""
    mems = [w.get("resources", {}).get(MEMORY_RESOURCE) for w in workers.values()]
    mems = [m for m in mems if m]
    gpu = finetune and any(w.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for w in workers.values())
    return (max(mems) if mems else None), gpu


def _attempts(client, keys: List[str]) -> Dict[str, int]:
    """How many times each task started on a worker that then died (the scheduler's count)."""
    def count(dask_scheduler=None, keys=keys):  # nested: pickled by value, the scheduler needs no sundae
        return {k: dask_scheduler.tasks[k].suspicious for k in keys if k in dask_scheduler.tasks}

    try:
        return client.run_on_scheduler(count)
    except Exception:  # an old scheduler: the count is unknown, not zero
        return {}


def run_on_client(client, todo, options, evaluate: bool, done: Callable, *, run_scene: Callable,
                  budget: Callable, failed: Callable, note: Callable = lambda m: None) -> None:
    """Convert ``todo`` (batch Scenes) on ``client``'s cluster, calling ``done(SceneResult)`` as
    each scene finishes. ``run_scene(scene, options, evaluate, quiet)`` converts one scene on a
    worker; ``budget(scene)``: its memory in bytes; ``failed(scene, message)``: the row of a scene
    whose task never returned. Cancels every task if interrupted (then re-raises)."""
    import dataclasses
    import socket
    import uuid

    from distributed import as_completed

    from . import storage

    if not todo:
        return
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if not workers:
        note("the Dask scheduler has no workers yet; waiting for one (Ctrl-C to stop)")
        client.wait_for_workers(1)
        workers = client.scheduler_info(n_workers=-1)["workers"]
    finetune = bool(options.get("finetune"))
    mem_cap, gpu = _task_resources(workers, finetune)
    if mem_cap is None:
        note(f"the workers advertise no '{MEMORY_RESOURCE}' resource: each runs as many scenes as it has "
             f"threads (start them with --resources {MEMORY_RESOURCE}=BYTES for the per-scene memory rule)")
    if gpu:
        note("fine-tuning on the workers that advertise a GPU resource")

    batch_id = uuid.uuid4().hex[:8]
    me = (socket.gethostname(), os.getpid())
    futures = {}
    for i, s in enumerate(todo):
        # workers elsewhere have another working folder: give them absolute paths
        s = dataclasses.replace(s, ply=storage.absolute(s.ply), output=storage.absolute(s.output),
                                cameras=None if s.cameras is None else storage.absolute(s.cameras))
        res = {}
        if mem_cap is not None:
            res[MEMORY_RESOURCE] = min(budget(s), mem_cap)
        if gpu:
            res[GPU_RESOURCE] = 1
        fut = client.submit(_scene_task, run_scene, s, options, evaluate, me, key=f"sundae-scene-{batch_id}-{i}",
                            pure=False, resources=res or None)
        futures[fut] = s
    try:
        for fut in as_completed(list(futures)):
            s = futures[fut]
            died = _attempts(client, [fut.key]).get(fut.key)
            killed = False
            if fut.status == "finished":
                r = fut.result()
            else:
                exc = fut.exception() if fut.status == "error" else None
                killed = type(exc).__name__ == "KilledWorker"
                if killed:
                    msg = (f"the worker died under this scene {died if died else 'several'} times "
                           f"(out of memory?); not retried further")
                elif exc is not None:
                    msg = f"internal error: {type(exc).__name__}: {exc}".split("\n")[0][:300]
                else:
                    msg = f"the task ended as {fut.status}"
                r = failed(s, msg)
            if died is not None:
                r.attempts = died + (0 if killed else 1)
            done(r)
            fut.release()
    except BaseException:  # Ctrl-C: nothing more should run for this batch
        try:
            client.cancel(list(futures), force=True)
        except Exception:
            pass
        raise
