"""``--target-psnr`` / ``--target-size`` (issue 14, part A): the search lands on the requested
novel-view PSNR, never writes past a size limit, stores the achieved figure, and refuses bad
option mixes with one line. Real scene subsets, no fine-tuning (or a few iterations): seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sundae_compress.api import compress, evaluate_output, evaluation_views, load_scene
from sundae_compress.errors import SundaeError
from sundae_compress.io.bundle import read_bundle
from sundae_compress.io.ply import read_ply, write_ply
from sundae_compress.quality.targets import (Recorder, count_for_bytes, count_for_level, parse_size,
                                             search_psnr)
from test_cli import assert_one_line_error

BIN = Path(sys.executable).parent


def run(tool, *args):
    env = dict(os.environ, SUNDAE_QUIET="1")
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def _subset(assets, tmp_path_factory, n) -> Path:
    gs = read_ply(assets / "guitar.ply")
    idx = np.sort(np.random.default_rng(1).choice(len(gs), n, replace=False))
    path = tmp_path_factory.mktemp("targets") / f"guitar{n}.ply"
    write_ply(gs.subset(idx), path)
    return path


@pytest.fixture(scope="module")
def scene(assets, tmp_path_factory) -> Path:
    """2,000 Gaussians drawn from guitar.ply (a real scene, small enough to render in a second)."""
    return _subset(assets, tmp_path_factory, 2000)


@pytest.fixture(scope="module")
def tiny(assets, tmp_path_factory) -> Path:
    return _subset(assets, tmp_path_factory, 600)


def _measured_novel(src: Path, bundle: Path) -> float:
    gs = load_scene(src)
    near, novel, _ = evaluation_views(gs, src)
    return evaluate_output(gs, bundle, near, novel)["novel"]["psnr"]


# -- sizes -------------------------------------------------------------------------------------
def test_parse_size_units():
    assert parse_size("200KB") == 200_000
    assert parse_size("1.5MB") == 1_500_000
    assert parse_size("64KiB") == 65_536
    assert parse_size("2mib") == 2 * 1024 * 1024
    assert parse_size("250000") == 250_000
    assert parse_size(" 12 kb ") == 12_000
    for bad in ("", "KB", "1.5XB", "-3KB", "0", "1e3", "abc"):
        with pytest.raises(SundaeError, match="--target-size"):
            parse_size(bad)


# -- the search on real prune-only curves ----------------------------------------------------
def test_count_search_lands_on_the_level(scene):
    """The count search finds a count at the level whose next-smaller probed count misses it."""
    from sundae_compress.api import _prune, resolve_codec_settings
    from sundae_compress.quality.stages import SceneStages
    from sundae_compress.render.cameras import novel_views

    gs = load_scene(scene)
    st = SceneStages(gs, prune=lambda g, c: _prune(g, c, "spectral", 0.5, "collapse", 0), finetune=None,
                     settings=resolve_codec_settings, info=lambda *a: None, read=None,
                     novel=novel_views(gs, n=6))
    rec = Recorder(st.probe, st.size)
    level = 30.0
    c = count_for_level(rec, level, len(gs), "medium")
    assert c is not None and rec.psnr[(c, "medium")] >= level
    below = [k for (k, q), p in rec.psnr.items() if k < c]
    assert below and all(rec.psnr[(k, "medium")] < level for k in below)
    assert len(rec.trials) <= 12
    # the largest count whose prune-only bundle fits a byte limit, by encoding only
    limit = st.size(c, "medium")
    fit = count_for_bytes(rec, limit, len(gs), "medium")
    assert fit >= c and rec.size(fit, "medium") <= limit < rec.size(fit + 1, "medium")


def test_search_models_the_finetune_gain():
    """With a gain that shrinks with the count, the second build lands in the window."""
    import math

    def probe(c, q):  # ~2.6 dB per doubling, like the shared scenes
        return 20.0 + 2.6 * math.log2(c / 10)

    built = []

    def build(c, q, limit):
        from sundae_compress.quality.targets import Built

        psnr = probe(c, q) + 6.0 - 0.8 * math.log2(c / 100)  # gain: 6 dB at 100, less above
        built.append(c)
        return Built(c, q, psnr, 10 * c, finetuned=True)

    out = search_psnr(33.0, 100_000, probe, lambda c, q: 10 * c, build, finetune=True, qualities=("medium",))
    assert out.reached and 33.0 <= out.built.psnr <= 34.0
    assert out.builds == len(built) <= 3


# -- --target-psnr end to end -----------------------------------------------------------------
def test_target_psnr_lands_in_window_and_is_recorded(scene, tmp_path):
    out = tmp_path / "t.sundae"
    rep = compress(scene, out, target_psnr=31.0, finetune=False, quality="medium")
    measured = _measured_novel(scene, out)  # the written bundle, read back and scored independently
    assert 31.0 <= measured <= 32.0, measured
    assert rep.target["reached"] and abs(rep.target["novel_psnr"] - measured) < 0.01
    t = read_bundle(out).header["pipeline"]["target"]
    assert t["kind"] == "psnr" and t["requested"] == 31.0 and abs(t["novel_psnr"] - measured) < 0.01
    assert read_bundle(out).header["pipeline"]["count"] == rep.kept_count < 2000
    assert "target 31 dB reached" in rep.summary()
    assert "novel views (12, 480x360)" in rep.summary() and "near views" not in rep.summary()  # named sets
    r = run("sundae-inspect", out)
    assert r.returncode == 0 and f"achieved {t['novel_psnr']:.2f} dB" in r.stdout, r.stdout
    assert json.loads(run("sundae-inspect", out, "--json").stdout)["pipeline"]["target"]["novel_psnr"] == t["novel_psnr"]


def test_unreachable_target_writes_nothing_unless_best_effort(tiny, tmp_path):
    out = tmp_path / "u.sundae"
    r = run("sundae-compress", tiny, "--target-psnr", "90", "--no-finetune", "--quality", "low", "-o", out)
    assert_one_line_error(r, "--target-psnr 90 dB is out of reach", "best found is", "nothing written")
    assert not out.exists() and not list(tmp_path.iterdir())
    r = run("sundae-compress", tiny, "--target-psnr", "90", "--no-finetune", "--quality", "low", "-o", out,
            "--best-effort")
    assert r.returncode == 0, r.stderr
    t = read_bundle(out).header["pipeline"]["target"]
    assert t["reached"] is False and t["novel_psnr"] < 90 and read_bundle(out).header["count"] == 600
    assert "NOT reached" in r.stdout and "NOT reached" in run("sundae-inspect", out).stdout


# -- --target-size ------------------------------------------------------------------------------
def test_target_size_never_larger(scene, tmp_path):
    for limit, quality in ((6000, None), (20_000, "medium")):  # None: every preset is weighed
        out = tmp_path / f"s{limit}.sundae"
        rep = compress(scene, out, target_size=limit, finetune=False, quality=quality)
        assert out.stat().st_size == rep.bytes_out <= limit
        assert out.stat().st_size > 0.9 * limit  # it used the room it had
        assert read_bundle(out).header["pipeline"]["target"]["kind"] == "size"
    # more bytes, more quality
    small, big = (read_bundle(tmp_path / f"s{x}.sundae").header["pipeline"]["target"]["novel_psnr"]
                  for x in (6000, 20_000))
    assert big > small
    r = run("sundae-compress", scene, "--target-size", "500", "--no-finetune", "-o", tmp_path / "tiny.sundae")
    assert_one_line_error(r, "--target-size 500 bytes is too small", "smallest possible bundle")
    assert not (tmp_path / "tiny.sundae").exists()


def test_target_size_with_finetuning_fits(scene, tmp_path):
    out = tmp_path / "f.sundae"
    rep = compress(scene, out, target_size="8KB", finetune_options={"iterations": 5}, quality="medium")
    assert out.stat().st_size <= 8000 and rep.finetune.get("iterations") == 5


# -- option conflicts ---------------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--target-psnr", "30", "--ratio", "0.1"], "--target-psnr chooses the number of Gaussians"),
    (["--target-size", "10KB", "--count", "100"], "--target-size chooses the number of Gaussians"),
    (["--target-psnr", "30", "--target-size", "10KB"], "not both"),
    (["--best-effort", "--ratio", "0.1"], "--best-effort applies to --target-psnr"),
    (["--target-size", "ten", "--no-finetune"], "--target-size must be a size"),
    (["--target-psnr", "nan", "--no-finetune"], "--target-psnr must be between"),
    (["--target-psnr", "30", "--format", "spz", "-o", "x.spz"], "writes .sundae bundles"),
    (["--target-size", "0KB"], "at least 1 byte"),
])
def test_option_conflicts(scene, tmp_path, args, fragment):
    if "-o" in args:
        args = args[:-1] + [tmp_path / args[-1]]
    else:
        args = args + ["-o", tmp_path / "x.sundae"]
    r = run("sundae-compress", scene, *args)
    assert_one_line_error(r, fragment)
    assert not list(tmp_path.iterdir())


def test_batch_accepts_targets(scene, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.ply").write_bytes(scene.read_bytes())
    r = run("sundae-compress", src, "-o", tmp_path / "out", "--target-size", "7KB", "--no-finetune", "--json")
    assert r.returncode == 0, r.stderr
    b = tmp_path / "out" / "a.sundae"
    assert b.stat().st_size <= 7000
    assert read_bundle(b).header["pipeline"]["target"]["requested"] == 7000
