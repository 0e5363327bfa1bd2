"""Robustness of the readers of untrusted input (engine: tests/fuzzing.py; the long run is
benchmarks/bench_fuzz.py), and a check that nothing in the package unpickles data."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fuzzing
from sundae_compress.errors import BundleError, PlyError

PACKAGE = Path(__file__).resolve().parents[1] / "sundae_compress"


def _fuzz(target, count, seed, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy overflow warnings on garbage values are expected
        return fuzzing.fuzz(target, count, seed, tmp_path / target)


def _describe(summary):
    return "\n".join(f"case {f['index']} ({f['seed']}, {'+'.join(f['mutations'])}): {f['outcome']}: {f['message']}"
                     for f in summary["failures"][:10])


def test_seeds_are_valid_files(tmp_path):
    from sundae_compress.io.bundle import read_bundle
    from sundae_compress.io.ply import read_ply

    for name, data in fuzzing.ply_seeds():
        (tmp_path / "s.ply").write_bytes(data)
        assert len(read_ply(tmp_path / "s.ply")) > 0, name
    for name, data in fuzzing.bundle_seeds(tmp_path):
        (tmp_path / "s.sundae").write_bytes(data)
        assert len(read_bundle(tmp_path / "s.sundae").gaussians) > 0, name
        h, blobs = fuzzing.split_bundle(data)
        assert fuzzing.join_bundle(h, blobs) == data  # re-serialising is exact, so edits are surgical


def test_cases_are_deterministic_and_varied():
    seeds = fuzzing.ply_seeds()
    a = [c.data for c in fuzzing.generate_cases("ply", 30, 5, seeds)]
    b = [c.data for c in fuzzing.generate_cases("ply", 30, 5, seeds)]
    assert a == b
    assert len(set(a)) >= 25


def test_harness_flags_crashes_hangs_and_memory(tmp_path):
    p = tmp_path / "x.ply"
    p.write_bytes(b"ply\n")

    def crash(path):
        raise IndexError("boom")

    def hang(path):
        t = time.perf_counter()
        while time.perf_counter() - t < 10:
            pass

    def hog(path):
        return np.ones(80 << 20, np.uint8)

    def refuse(path):
        raise PlyError(f"{path}: bad")

    assert fuzzing.run_case("ply", p, reader=crash).outcome == "crash"
    assert fuzzing.run_case("ply", p, reader=hang, time_limit=0.3).outcome == "hang"
    assert fuzzing.run_case("ply", p, reader=hog).outcome == "memory"
    assert fuzzing.run_case("ply", p, reader=refuse).outcome == "error"
    assert fuzzing.run_case("ply", p).outcome == "error"  # the real reader: a clear PlyError


def test_fuzz_ply_reader(tmp_path):
    s = _fuzz("ply", 200, 11, tmp_path)
    assert s["counts"]["crash"] + s["counts"]["hang"] + s["counts"]["memory"] == 0, _describe(s)
    assert s["counts"]["error"] > 80 and s["counts"]["ok"] > 0  # the mutations do reach both outcomes
    assert s["max_seconds"] < 5


def test_fuzz_bundle_reader(tmp_path):
    s = _fuzz("bundle", 200, 12, tmp_path)
    assert s["counts"]["crash"] + s["counts"]["hang"] == 0, _describe(s)
    assert s["counts"]["error"] > 80 and s["counts"]["ok"] > 0
    assert s["counts"]["memory"] == 0, _describe(s)


def test_bundle_zip_bomb_is_refused(tmp_path):
    from sundae_compress.io.bundle import read_bundle

    name, seed = fuzzing.bundle_seeds(tmp_path)[2]  # sh1, one Gaussian
    p = tmp_path / "bomb.sundae"
    p.write_bytes(fuzzing.forge_bundle(seed, 3_000_000))
    assert p.stat().st_size < 8000
    r = fuzzing.run_case("bundle", p)
    assert r.outcome == "error", f"{r.outcome}: {r.message}"
    with pytest.raises(BundleError):
        read_bundle(p)


def test_absurd_counts_with_valid_checksums_are_refused_cheaply(tmp_path):
    """Counts far beyond what the file holds, everything else consistent: refused before any
    big allocation, by the count / ratio checks (not by a checksum)."""
    _, seed = fuzzing.bundle_seeds(tmp_path)[0]
    h, blobs = fuzzing.split_bundle(seed)
    for n in (1 << 28, (1 << 28) + 1, 1 << 40):
        h["count"] = h["codec"]["n"] = n
        p = tmp_path / f"n{n}.sundae"
        p.write_bytes(fuzzing.join_bundle(h, blobs))
        r = fuzzing.run_case("bundle", p)
        assert r.outcome == "error" and "checksum" not in r.message, r.message
        assert r.peak_bytes < 8 << 20


def test_nothing_is_unpickled():
    """No code path may deserialise untrusted data with pickle (bundles carry ONNX, not pickles)."""
    bad = []
    pattern = re.compile(r"\bpickle\b|\bcPickle\b|\bdill\b|\bjoblib\b|torch\.load\s*\(|allow_pickle\s*=\s*True"
                         r"|np\.load\s*\(|numpy\.load\s*\(|marshal\.loads|shelve\.")
    for f in sorted(PACKAGE.rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{f.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    assert not bad, "pickle-capable loading in the package:\n" + "\n".join(bad)
    assert len(list(PACKAGE.rglob("*.py"))) > 10  # the scan did look at the package


def test_ascii_ply_with_astronomical_count_is_a_clear_error(tmp_path):
    p = tmp_path / "huge.ply"
    seed = dict(fuzzing.ply_seeds())["ascii_sh1"]
    p.write_bytes(seed.replace(b"element vertex 8", b"element vertex 99999999999999999999999999999999", 1))
    r = fuzzing.run_case("ply", p)
    assert r.outcome == "error", f"{r.outcome}: {r.message}"
