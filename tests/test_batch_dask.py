"""The folder batch on a Dask cluster (sundae_compress/batch_dask.py): a real 2-worker LocalCluster
(worker processes), the same bundles as one machine, a worker killed mid-batch, Ctrl-C, fsspec URLs."""

from __future__ import annotations

import _thread
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from click.testing import CliRunner  # noqa: E402

from sundae_compress.batch import TEMP_GLOB, run_batch  # noqa: E402
from sundae_compress.batch_dask import connect  # noqa: E402
from sundae_compress.cli import compress_main  # noqa: E402
from sundae_compress.io.bundle import read_bundle  # noqa: E402
from sundae_compress.io.ply import read_ply, write_ply  # noqa: E402
from sundae_compress.progress import is_quiet  # noqa: E402

CAM = {"id": 0, "img_name": "v0", "width": 64, "height": 48, "position": [0, 0, -3],
       "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 60.0, "fy": 60.0}


def _subset(gs, n: int, seed: int, dst: Path) -> Path:
    idx = np.sort(np.random.default_rng(seed).choice(len(gs), n, replace=False))
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_ply(gs.subset(idx), dst)
    return dst


@pytest.fixture(scope="module")
def mixed(assets, tmp_path_factory):
    """Good scenes (one nested), a truncated PLY, a 3DGS training folder; and the bundles the
    single-machine batch makes of it."""
    base = tmp_path_factory.mktemp("dask")
    root = base / "in"
    donut, guitar = read_ply(assets / "donut.ply"), read_ply(assets / "guitar.ply")
    _subset(donut, 2000, 0, root / "donut_small.ply")
    _subset(guitar, 2000, 1, root / "sub" / "deeper" / "guitar_small.ply")
    bad = _subset(donut, 400, 2, root / "sub" / "broken.ply")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    run = root / "runs" / "train.v1"
    _subset(donut, 800, 3, run / "point_cloud" / "iteration_7000" / "point_cloud.ply")
    _subset(donut, 1500, 4, run / "point_cloud" / "iteration_30000" / "point_cloud.ply")
    (run / "cameras.json").write_text(json.dumps([CAM]))
    ref = base / "single"
    res = run_batch(root, ref, finetune=False)
    assert [r.status for r in res.results] == ["ok", "ok", "failed", "ok"]
    return root, {p.relative_to(ref).as_posix(): p.read_bytes() for p in ref.rglob("*.sundae")}


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes (what --scheduler local:2 starts)."""
    before = os.environ.get("OMP_NUM_THREADS")
    with connect("local:2") as client:
        client.wait_for_workers(2)
        threads = str(max(1, os.cpu_count() // 2))  # each worker gets its share of the cores
        env = client.run(lambda: (os.environ.get("OMP_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")))
        assert set(env.values()) == {(threads, None)}  # and glibc's own trim threshold (Dask's: 1.7x slower)
        yield client
    assert os.environ.get("OMP_NUM_THREADS") == before  # Dask's nannies set it here; connect puts it back


def _report(out: Path) -> dict:
    return json.loads((out / "batch_report.json").read_text())


def test_cluster_gives_the_single_machine_bundles(mixed, cluster, tmp_path):
    root, ref = mixed
    out = tmp_path / "out"
    res = run_batch(f"file://{root}", out, finetune=False, client=cluster)
    assert not res.ok
    bundles = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.sundae")}
    assert sorted(bundles) == ["donut_small.sundae", "runs/train.v1.sundae", "sub/deeper/guitar_small.sundae"]
    assert bundles == ref  # byte for byte
    rep = _report(out)
    assert rep["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    rows = {r["scene"]: r for r in rep["scenes"]}
    assert "truncated" in rows["sub/broken.ply"]["error"] and rows["sub/broken.ply"]["attempts"] == 1  # not retried
    assert rows["runs/train.v1"]["gaussians_in"] == 1500  # the latest iteration
    workers = set(cluster.scheduler_info(n_workers=-1)["workers"])
    for r in rep["scenes"]:
        assert r["worker"] in workers and r["seconds"] > 0
    assert "worker" in (out / "batch_report.csv").read_text().splitlines()[0]

    # resume on the client: complete bundles are skipped, nothing is sent to the cluster
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.sundae")}
    res2 = run_batch(root, out, finetune=False, client=cluster)
    assert res2.to_dict()["counts"] == {"ok": 0, "skipped": 3, "failed": 1}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.sundae")} == mtimes


def _pids(client):
    return client.run(os.getpid)


def _executing(client, prefix="sundae-scene-"):
    """worker address -> keys of batch scenes running there right now."""
    def running(dask_worker=None):
        return [k for k, ts in dask_worker.state.tasks.items() if ts.state == "executing"]

    return {w: [k for k in ks if str(k).startswith(prefix)] for w, ks in client.run(running).items()}


def _donut_scenes(assets, folder: Path, n_scenes: int, n: int, seed: int) -> Path:
    donut = read_ply(assets / "donut.ply")
    for i in range(n_scenes):
        _subset(donut, n, seed + i, folder / f"s{i:02d}.ply")
    return folder


def test_ctrl_c_cancels_the_cluster_tasks(assets, cluster, tmp_path):
    # enough scenes that the batch outlasts the interrupt thread's reaction on a busy machine (one
    # 3,000-Gaussian scene converts in ~0.2 s: 8 of them were once all done before the interrupt)
    n_scenes = 24
    src = _donut_scenes(assets, tmp_path / "in", n_scenes, 3000, 40)
    out = tmp_path / "out"

    def interrupt_after_first_bundle():
        t0 = time.time()
        while not list(out.rglob("*.sundae")) and time.time() - t0 < 60:
            time.sleep(0.02)
        _thread.interrupt_main()  # what Ctrl-C does to the client

    # a process started in the background by a non-interactive shell (nohup ... &, some CI runners)
    # inherits SIGINT ignored, and interrupt_main() then does nothing: give the test a terminal's handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        th = threading.Thread(target=interrupt_after_first_bundle)
        th.start()
        with pytest.raises(KeyboardInterrupt):
            run_batch(src, out, finetune=False, client=cluster)
        th.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    rep = _report(out)
    assert rep["interrupted"] is True and rep["ok"] is False
    statuses = {r["scene"]: r["status"] for r in rep["scenes"]}
    assert set(statuses.values()) == {"ok"} and len(statuses) >= 1  # at least the bundle that was seen
    assert sorted(list(statuses) + rep["unfinished"]) == [f"s{i:02d}.ply" for i in range(n_scenes)]
    assert rep["unfinished"], "the interrupt should land mid-batch"
    time.sleep(1.0)
    assert not any(_executing(cluster).values())  # nothing of the batch still runs
    assert not [k for k in cluster.run_on_scheduler(lambda dask_scheduler=None: list(dask_scheduler.tasks))
                if str(k).startswith("sundae-scene-")]
    for b in out.rglob("*.sundae"):  # a bundle written before the tasks were cancelled is complete
        read_bundle(b)


def test_memory_urls(mixed):
    """fsspec URLs for the input and the output (memory://, so in-process thread workers)."""
    import fsspec
    from distributed import Client

    root, ref = mixed
    fs = fsspec.filesystem("memory")
    for p in root.rglob("*"):
        if p.is_file():
            fs.pipe_file("/dask-test/in/" + p.relative_to(root).as_posix(), p.read_bytes())
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        res = run_batch("memory://dask-test/in", "memory://dask-test/out", finetune=False, client=client)
        assert res.to_dict()["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
        assert not is_quiet()  # thread workers share this process: they leave its progress setting alone
        got = {f[len("/dask-test/out/"):]: fs.cat_file(f) for f in fs.find("/dask-test/out") if f.endswith(".sundae")}
        assert got == ref
        rep = json.loads(fs.cat_file("/dask-test/out/batch_report.json"))
        err = {r["scene"]: r["error"] for r in rep["scenes"]}["sub/broken.ply"]
        assert err.startswith("memory:///dask-test/in/sub/broken.ply: ") and "truncated" in err  # the URL, not a temp copy
        assert not [f for f in fs.find("/dask-test/out") if f.endswith(".tmp") or f.endswith(".part")]
        # resume reads the remote bundles' checksums
        res2 = run_batch("memory://dask-test/in", "memory://dask-test/out", finetune=False, client=client)
        assert res2.to_dict()["counts"] == {"ok": 0, "skipped": 3, "failed": 1}
    fs.rm("/dask-test", recursive=True)


def test_cli_scheduler_errors(mixed, tmp_path, monkeypatch):
    root, _ = mixed
    runner = CliRunner()
    for args, msg in (([str(root), "-o", str(tmp_path / "o"), "--scheduler", "local:0"], "local:N"),
                      ([str(root), "-o", str(tmp_path / "o"), "--scheduler", "local:2", "--jobs", "2"], "--jobs"),
                      ([str(root / "donut_small.ply"), "--scheduler", "local:2"], "batch mode")):
        r = runner.invoke(compress_main, args)
        assert r.exit_code == 1 and r.stderr.startswith("error: ") and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)  # as if Dask were not installed
    r = runner.invoke(compress_main, [str(root), "-o", str(tmp_path / "o"), "--scheduler", "local:2"])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("error: ") and "pip install 'sundae-compress[dask]'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_finetuning_goes_to_the_gpu_workers(mixed, tmp_path):
    """With fine-tuning, scenes run only on the workers that advertise a GPU resource; without it,
    anywhere. (In-process thread workers; the resource is what the scheduler routes on.)"""
    from distributed import Client, Scheduler, SpecCluster, Worker

    src = tmp_path / "in"
    for i, name in enumerate(("donut_small.ply", "sub/deeper/guitar_small.ply")):
        _subset(read_ply(mixed[0] / name), 500, i, src / Path(name).name)
    spec = {"cpu": {"cls": Worker, "options": {"nthreads": 1}},
            "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}}}
    with SpecCluster(workers=spec, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}) as cl, \
            Client(cl) as client:
        client.wait_for_workers(2)
        gpu = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w.get("resources")]
        assert len(gpu) == 1
        res = run_batch(src, tmp_path / "ft", client=client, finetune=True,
                        finetune_options={"iterations": 2, "resolution": 16, "net": False})
        assert [r.status for r in res.results] == ["ok", "ok"], res.to_dict()
        assert {r.worker for r in res.results} == set(gpu)
        for b in (tmp_path / "ft").glob("*.sundae"):
            assert read_bundle(b).header["pipeline"]["finetune"]["iterations"] == 2


def test_worker_killed_mid_batch(assets, cluster, tmp_path):
    src = _donut_scenes(assets, tmp_path / "in", 4, 20000, 20)
    out = tmp_path / "out"
    pids = _pids(cluster)
    killed = {}

    def killer():
        t0 = time.time()
        while time.time() - t0 < 60:
            for w, keys in _executing(cluster).items():
                if keys:
                    os.kill(pids[w], signal.SIGKILL)
                    killed.update(worker=w, key=keys[0])
                    return
            time.sleep(0.02)

    th = threading.Thread(target=killer)
    th.start()
    res = run_batch(src, out, finetune=False, client=cluster)
    th.join()
    assert killed, "no scene was seen running"
    assert res.ok, res.to_dict()
    rep = _report(out)
    assert rep["counts"] == {"ok": 4, "skipped": 0, "failed": 0}
    assert sorted(p.name for p in out.rglob("*.sundae")) == [f"s{i:02d}.sundae" for i in range(4)]
    for b in out.rglob("*.sundae"):
        assert len(read_bundle(b).gaussians) == 2000  # complete: every checksum passes
    assert not list(out.rglob(TEMP_GLOB))
    redone = [r for r in rep["scenes"] if r["attempts"] > 1]
    assert redone, "the report must say which scene was run again"
    assert all(r["worker"] != killed["worker"] for r in redone)  # finished elsewhere
    assert all(r["attempts"] == 1 for r in rep["scenes"] if r not in redone)
