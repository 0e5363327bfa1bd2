"""Batch conversion of folders (sundae_compress/batch.py) through the real command line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sundae_compress.batch import TEMP_GLOB, discover, scene_memory_budget
from sundae_compress.io.bundle import read_bundle
from sundae_compress.io.ply import read_ply, write_ply

CLI = str(Path(sys.executable).parent / "sundae-compress")


def _subset(src: Path, n: int, seed: int, dst: Path) -> Path:
    gs = read_ply(src)
    idx = np.sort(np.random.default_rng(seed).choice(len(gs), n, replace=False))
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_ply(gs.subset(idx), dst)
    return dst


def _run(*args, timeout=300):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tree(assets, tmp_path_factory):
    """good scenes (one nested), a truncated PLY, and an INRIA training output folder."""
    root = tmp_path_factory.mktemp("batch") / "in"
    _subset(assets / "donut.ply", 3000, 0, root / "donut_small.ply")
    _subset(assets / "guitar.ply", 3000, 1, root / "sub" / "deeper" / "guitar_small.ply")
    bad = _subset(assets / "donut.ply", 500, 2, root / "sub" / "broken.ply")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    run = root / "runs" / "train.v1"
    _subset(assets / "donut.ply", 1200, 3, run / "point_cloud" / "iteration_7000" / "point_cloud.ply")
    _subset(assets / "donut.ply", 2000, 4, run / "point_cloud" / "iteration_30000" / "point_cloud.ply")
    _subset(assets / "donut.ply", 100, 5, run / "input.ply")  # SfM points of a training run: not a scene
    cam = {"id": 0, "img_name": "v0", "width": 64, "height": 48, "position": [0, 0, -3],
           "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 60.0, "fy": 60.0}
    (run / "cameras.json").write_text(json.dumps([cam]))
    return root


def test_discover_mirrors_tree_and_takes_latest_iteration(tree, tmp_path):
    out = tmp_path / "out"
    scenes = {s.name: s for s in discover(tree, out)}
    assert set(scenes) == {"donut_small.ply", "sub/broken.ply", "sub/deeper/guitar_small.ply", "runs/train.v1"}
    run = scenes["runs/train.v1"]
    assert run.ply.parent.name == "iteration_30000"
    assert run.cameras == tree / "runs" / "train.v1" / "cameras.json"
    assert run.output == out.resolve() / "runs" / "train.v1.sundae"  # the dot in the folder name is kept
    assert scenes["sub/deeper/guitar_small.ply"].output == out.resolve() / "sub" / "deeper" / "guitar_small.sundae"
    # an output folder inside the input tree is never scanned
    inner = tree / "sub" / "converted"
    assert {s.name for s in discover(tree, inner)} == set(scenes)


def test_memory_budget_grows_with_the_file(tree):
    small, big = tree / "sub" / "broken.ply", tree / "donut_small.ply"
    assert scene_memory_budget(big, False) > scene_memory_budget(small, False) >= 300e6
    assert scene_memory_budget(big, True) > scene_memory_budget(big, False)


def test_batch_end_to_end(tree, tmp_path):
    out = tmp_path / "out"
    r = _run(tree, "-o", out, "--no-finetune")
    assert r.returncode == 1, r.stderr  # the truncated scene failed, the others did not stop
    rows = {row["scene"]: row for row in csv.DictReader(open(out / "batch_report.csv"))}
    status = {k: v["status"] for k, v in rows.items()}
    assert status == {"donut_small.ply": "ok", "sub/broken.ply": "failed", "sub/deeper/guitar_small.ply": "ok",
                      "runs/train.v1": "ok"}
    assert "truncated" in rows["sub/broken.ply"]["error"]
    assert "failed" in r.stdout and "donut_small.ply" in r.stdout  # the table
    rep = json.loads((out / "batch_report.json").read_text())
    assert rep["ok"] is False and rep["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    d = {s["scene"]: s for s in rep["scenes"]}
    assert d["donut_small.ply"]["gaussians_in"] == 3000 and d["donut_small.ply"]["gaussians_kept"] == 300
    assert d["runs/train.v1"]["gaussians_in"] == 2000  # iteration_30000, not 7000
    assert d["donut_small.ply"]["ratio"] > 5
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.sundae"))
    assert outputs == ["donut_small.sundae", "runs/train.v1.sundae", "sub/deeper/guitar_small.sundae"]
    assert read_bundle(out / "runs" / "train.v1.sundae").header["source"]["count"] == 2000
    first = {p: (out / p).read_bytes() for p in outputs}

    # identical to a single-file run
    single = tmp_path / "single.sundae"
    r1 = _run(tree / "donut_small.ply", "-o", single, "--no-finetune")
    assert r1.returncode == 0, r1.stderr
    assert single.read_bytes() == first["donut_small.sundae"]

    # re-run: complete outputs are skipped, JSON-only stdout
    mtimes = {p: (out / p).stat().st_mtime_ns for p in outputs}
    r2 = _run(tree, "-o", out, "--no-finetune", "--json")
    assert r2.returncode == 1
    rep2 = json.loads(r2.stdout)  # nothing but the JSON on stdout
    assert rep2["counts"] == {"ok": 0, "skipped": 3, "failed": 1}
    assert {p: (out / p).stat().st_mtime_ns for p in outputs} == mtimes
    sk = {s["scene"]: s for s in rep2["scenes"]}["donut_small.ply"]
    assert sk["gaussians_kept"] == 300 and sk["mb_out"] > 0

    # --overwrite redoes them, in parallel, with the same bytes
    r3 = _run(tree, "-o", out, "--no-finetune", "--overwrite", "--jobs", "2", "--quiet")
    assert r3.returncode == 1, r3.stderr
    assert r3.stderr == ""
    rep3 = json.loads((out / "batch_report.json").read_text())
    assert rep3["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    assert {p: (out / p).read_bytes() for p in outputs} == first
    assert {p: (out / p).stat().st_mtime_ns for p in outputs} != mtimes


def test_batch_exit_zero_and_errors(tree, tmp_path):
    good = tmp_path / "good"
    _subset(tree / "donut_small.ply", 800, 0, good / "one.ply")
    r = _run(good, "-o", tmp_path / "o", "--no-finetune", "--quiet")
    assert r.returncode == 0, r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run(empty, "-o", tmp_path / "o2", "--no-finetune")
    assert r.returncode == 1 and r.stderr.strip().startswith("error:") and "no .ply" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _run(good, "--no-finetune")
    assert r.returncode == 1 and "needs -o" in r.stderr


def test_batch_resumes_after_kill(assets, tmp_path):
    src = tmp_path / "in"
    for i in range(4):
        _subset(assets / "donut.ply", 4000, 10 + i, src / f"s{i}.ply")
    out = tmp_path / "out"
    p = subprocess.Popen([CLI, str(src), "-o", str(out), "--no-finetune", "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while not list(out.rglob("*.sundae")) and time.time() - t0 < 240 and p.poll() is None:
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    done = list(out.rglob("*.sundae"))
    assert 1 <= len(done) < 4, "the kill should land mid-batch"
    for b in done:
        read_bundle(b)  # every bundle present is complete (checksums pass)
    (out / ".s3.sundae.k1ll3d.tmp").write_bytes(b"partial")  # what a kill during write_bundle leaves
    r = _run(src, "-o", out, "--no-finetune", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["counts"]["skipped"] == len(done) and rep["counts"]["ok"] == 4 - len(done)
    assert sorted(b.name for b in out.rglob("*.sundae")) == [f"s{i}.sundae" for i in range(4)]
    assert not list(out.rglob(TEMP_GLOB))
    for b in out.rglob("*.sundae"):
        read_bundle(b)
