"""Level-of-detail ladders (``--lod``): one bundle (format version 3) holding several levels.

A real-scene subset (the first 6,000 valid Gaussians of guitar) is compressed once, without
fine-tuning, into a 3-level ladder; the tests read it back level by level, through the API and the
command-line tools, check the prefix property a streaming reader relies on, and compare a level with
an independently compressed bundle of the same budget on novel views."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import zlib

import numpy as np
import pytest
import zstandard

from conftest import make_tiny_scene
from sundae_compress.codec import quality_settings
from sundae_compress.errors import BundleError, SundaeError
from sundae_compress.io.bundle import LADDER_VERSION, inspect_bundle, read_bundle, write_bundle
from sundae_compress.io.ladder import (decoded_levels, encode_level, prefix_bytes, read_level_prefix,
                                       write_ladder)
from sundae_compress.io.ply import read_ply, write_ply
from sundae_compress.lod import level_counts, parse_lod
from test_cli import BIN, assert_one_line_error, run

LOD = "0.05,0.2,0.5"
SUBSET = 6000


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, request):
    from conftest import ASSETS_DIR

    if not (ASSETS_DIR / "guitar.ply").is_file():
        pytest.skip(f"shared test scenes not found in {ASSETS_DIR}")
    d = tmp_path_factory.mktemp("lod")
    gs = read_ply(ASSETS_DIR / "guitar.ply")
    ply = d / "g6k.ply"
    write_ply(gs.subset(np.arange(SUBSET)), ply)
    out = d / "g6k.sundae"
    r = run("sundae-compress", ply, "--lod", LOD, "--no-finetune", "-o", out, "--json")
    return ply, out, json.loads(r.stdout)


def test_counts_bytes_and_levels_in_report_and_inspect(ladder):
    ply, out, rep = ladder
    counts = [round(r * SUBSET) for r in (0.05, 0.2, 0.5)]
    assert [lv["count"] for lv in rep["levels"]] == counts and rep["kept_count"] == counts[-1]
    assert rep["bytes_out"] == out.stat().st_size
    # the prefix of level k ends where level k+1's sections start; the last one is the whole file
    prefixes = [lv["prefix_bytes"] for lv in rep["levels"]]
    assert prefixes[-1] == out.stat().st_size
    assert all(b - a == lv["bytes"] for a, b, lv in zip(prefixes, prefixes[1:], rep["levels"][1:]))
    assert [lv["quality"] for lv in rep["levels"]] == ["low", "low", "medium"]
    d = json.loads(run("sundae-inspect", out, "--json").stdout)
    assert d["format_version"] == LADDER_VERSION and d["count"] == counts[-1]
    assert [(lv["count"], lv["bytes"], lv["prefix_bytes"]) for lv in d["levels"]] == \
        [(lv["count"], lv["bytes"], lv["prefix_bytes"]) for lv in rep["levels"]]
    novel = [lv["fidelity"]["novel_psnr"] for lv in d["levels"]]
    assert novel == [lv["novel_psnr"] for lv in rep["levels"]]
    assert novel[0] < novel[1] < novel[2]  # more Gaussians, closer to the original
    text = run("sundae-inspect", out).stdout
    assert "novel PSNR" in text and f"{counts[0]:,}" in text and f"{novel[2]:.2f} dB" in text
    for k in range(3):
        assert f"L{k}/means" in text


def test_each_level_decodes_on_its_own(ladder, tmp_path):
    ply, out, rep = ladder
    counts = [lv["count"] for lv in rep["levels"]]
    for k, n in enumerate(counts):
        b = read_bundle(out, level=k)
        assert len(b.gaussians) == n and b.header["level"] == k and b.gaussians.finite_mask().all()
    assert len(read_bundle(out).gaussians) == counts[-1]  # default: the finest
    env = {k: v for k, v in os.environ.items() if k != "SUNDAE_QUIET"}  # the level line is a progress line
    r = subprocess.run([str(BIN / "sundae-decompress"), str(out), "--level", "0", "-o", str(tmp_path / "l0.ply")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and len(read_ply(tmp_path / "l0.ply")) == counts[0]
    assert f"level 0 of g6k.sundae (coarsest, {counts[0]:,} Gaussians; levels 0-2" in r.stderr
    run("sundae-decompress", out, "-o", tmp_path / "fine.ply")
    assert len(read_ply(tmp_path / "fine.ply")) == counts[-1]
    run("sundae-render", out, "--level", "1", "-o", tmp_path / "r", "--views", "1", "--size", "64x48")
    assert len(list((tmp_path / "r").glob("*.png"))) == 2  # the view and the contact sheet


def test_eval_level_matches_the_psnr_stored_in_the_bundle(ladder):
    ply, out, rep = ladder
    r = json.loads(run("sundae-eval", ply, out, "--level", "0", "--json").stdout)
    assert r["level"] == 0 and r["levels"] == 3 and "level 0" in r["level_note"]
    assert r["n_gaussians_candidate"] == rep["levels"][0]["count"]
    assert abs(r["psnr"] - rep["levels"][0]["novel_psnr"]) < 0.01
    assert abs(r["worst"]["psnr"] - rep["levels"][0]["worst_psnr"]) < 0.01


def test_level_within_half_a_db_of_an_independent_bundle(ladder, tmp_path):
    """The middle level (stored at the coarser preset) against ``--ratio 0.2`` alone, novel views."""
    from sundae_compress.api import compress

    ply, out, rep = ladder
    ind = tmp_path / "ind.sundae"
    r = compress(ply, ind, ratio=0.2, finetune=False, evaluate=True)  # the same views as the ladder's
    assert r.kept_count == rep["levels"][1]["count"]
    novel = r.fidelity["novel"]["psnr"]
    assert abs(rep["levels"][1]["novel_psnr"] - novel) <= 0.5, (rep["levels"][1]["novel_psnr"], novel)
    assert rep["levels"][1]["bytes"] < ind.stat().st_size


def test_prefix_decodes_the_coarse_level(ladder, tmp_path):
    ply, out, rep = ladder
    data = out.read_bytes()
    n0 = prefix_bytes(data, 0)
    assert n0 == rep["levels"][0]["prefix_bytes"] < len(data)
    part = data[:n0]
    full0 = read_bundle(out, level=0).gaussians
    got = read_level_prefix(part, 0).gaussians
    assert len(got) == len(full0)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert np.array_equal(getattr(got, name), getattr(full0, name))
    with pytest.raises(BundleError, match="truncated"):
        read_level_prefix(part, 1)
    with pytest.raises(BundleError, match="truncated"):
        read_level_prefix(data[:n0 - 1], 0)
    assert len(read_level_prefix(data[:prefix_bytes(data, 1)], 1).gaussians) == rep["levels"][1]["count"]
    # the file itself, cut there, is a truncated bundle for the tools
    cut = tmp_path / "cut.sundae"
    cut.write_bytes(part)
    assert_one_line_error(run("sundae-inspect", cut, check=False), "truncated")


def test_bad_level_and_bad_lod_are_one_line_errors(ladder, tmp_path):
    ply, out, rep = ladder
    assert_one_line_error(run("sundae-decompress", out, "--level", "3", "-o", tmp_path / "x.ply", check=False),
                          "has no level 3", "levels 0-2")
    assert not (tmp_path / "x.ply").exists()
    assert_one_line_error(run("sundae-render", ply, "--level", "0", "-o", tmp_path / "r", check=False),
                          "not a .sundae bundle")
    assert_one_line_error(run("sundae-compress", ply, "--lod", "0.1", check=False), "2 to")
    assert_one_line_error(run("sundae-compress", ply, "--lod", "0.1,0.2", "--ratio", "0.1", check=False),
                          "drop --ratio")
    assert_one_line_error(run("sundae-compress", ply, "--lod", "0.1,0.2", "-o", tmp_path / "x.spz", check=False),
                          "one .sundae bundle")
    assert not list(tmp_path.glob("*.sundae"))


def test_old_single_level_bundles_read_as_level_0(tmp_path):
    gs = make_tiny_scene(n=120, sh_degree=1)
    for version in (1, 2):
        p = tmp_path / f"v{version}.sundae"
        write_bundle(p, gs, version=version)
        assert len(read_bundle(p).gaussians) == len(read_bundle(p, level=0).gaussians) == 120
        assert "levels" not in inspect_bundle(p)
        with pytest.raises(SundaeError, match="has no level 1: it holds level 0 only"):
            read_bundle(p, level=1)
    r = run("sundae-decompress", tmp_path / "v2.sundae", "--level", "-1", "-o", tmp_path / "v2.ply", check=False)
    assert_one_line_error(r, "has no level -1")
    assert not (tmp_path / "v2.ply").exists()


def test_nested_levels_and_the_level_table_checks(tmp_path):
    a, b, c = (make_tiny_scene(n, seed=s, sh_degree=2) for n, s in ((40, 1), (150, 2), (90, 3)))
    levels = [encode_level(a, quality_settings("low")), encode_level(b, quality_settings("medium")),
              encode_level(c, quality_settings("medium"), base=1)]  # level 2 = level 1's Gaussians + 90
    p = tmp_path / "n.sundae"
    st = write_ladder(p, levels)
    assert [lv["count"] for lv in st.levels] == [40, 150, 240] and st.file_bytes == p.stat().st_size
    want = decoded_levels(levels)
    for k in range(3):
        got = read_bundle(p, level=k).gaussians
        assert len(got) == len(want[k])
        assert np.array_equal(got.means, want[k].means) and np.array_equal(got.sh, want[k].sh)
    assert np.array_equal(read_bundle(p).gaussians.means[:150], read_bundle(p, level=1).gaussians.means)
    data = p.read_bytes()
    # every sampled byte flip after the header is detected by a full read, whatever level is asked for
    base = prefix_bytes(data, 0) - st.levels[0]["bytes"]
    for off in range(base, len(data), max(1, (len(data) - base) // 40)):
        bad = bytearray(data)
        bad[off] ^= 0x10
        q = tmp_path / "flip.sundae"
        q.write_bytes(bytes(bad))
        with pytest.raises(BundleError, match="checksum|corrupt"):
            read_bundle(q, level=0)

    def rewrite(edit):
        hlen = struct.unpack_from("<I", data, 12)[0]
        h = json.loads(zstandard.ZstdDecompressor().decompress(data[16:16 + hlen]))
        edit(h)
        hb = zstandard.ZstdCompressor().compress(json.dumps(h).encode())
        head = data[:12] + struct.pack("<I", len(hb)) + hb
        q = tmp_path / "edit.sundae"
        q.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + data[20 + hlen:])
        return q

    for edit, message in [
        (lambda h: h["levels"][1].update(range=[0, 5]), "range"),
        (lambda h: h["levels"][2].update(count=241), "declares"),
        (lambda h: h["levels"][2].update(base=2), "does not precede"),
        (lambda h: h["levels"].insert(0, h["levels"].pop(1)), "does not start|more Gaussians"),
        (lambda h: h["levels"][0]["codec"].update(n=41), "disagree"),
        (lambda h: h.update(count=150), "finest"),
        (lambda h: h.update(net={"bytes": 0}), "no compensation net"),
        (lambda h: h.update(levels=[]), "level table"),
    ]:
        with pytest.raises(BundleError, match=message):
            read_bundle(rewrite(edit))
    # the header is a zstd frame of the JSON: plain JSON there is corrupt
    hlen = struct.unpack_from("<I", data, 12)[0]
    hb = zstandard.ZstdDecompressor().decompress(data[16:16 + hlen])
    head = data[:12] + struct.pack("<I", len(hb)) + hb
    q = tmp_path / "plain.sundae"
    q.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + data[20 + hlen:])
    with pytest.raises(BundleError, match="header is not a zstd frame"):
        read_bundle(q)


def test_lod_parsing_and_counts():
    assert parse_lod("0.2, 0.01,0.05") == [0.01, 0.05, 0.2]
    for bad, msg in [("0.1,,0.2", "commas"), ("0.1,x", "not a number"), ("0,0.5", r"\(0, 1\]"),
                     ("0.1,0.1", "twice"), (",".join(["0.1"] * 9), "2 to")]:
        with pytest.raises(SundaeError, match=msg):
            parse_lod(bad)
    assert level_counts([0.01, 0.05, 0.2], 90187) == [902, 4509, 18037]
    with pytest.raises(SundaeError, match="both keep"):
        level_counts([0.01, 0.011], 100)


def test_batch_mode_writes_ladders_and_resumes(ladder, tmp_path):
    ply, out, rep = ladder
    src = tmp_path / "scenes" / "a"
    src.mkdir(parents=True)
    (src / "g.ply").write_bytes(ply.read_bytes())
    dst = tmp_path / "out"
    r = json.loads(run("sundae-compress", tmp_path / "scenes", "-o", dst, "--lod", "0.2,0.5", "--no-finetune",
                       "--json").stdout)
    assert r["ok"] and r["counts"]["ok"] == 1
    d = inspect_bundle(dst / "a" / "g.sundae")
    assert [lv["count"] for lv in d["levels"]] == [round(0.2 * SUBSET), round(0.5 * SUBSET)]
    r = json.loads(run("sundae-compress", tmp_path / "scenes", "-o", dst, "--lod", "0.2,0.5", "--no-finetune",
                       "--json").stdout)
    assert r["counts"]["skipped"] == 1  # a complete ladder is a finished scene
    assert_one_line_error(run("sundae-compress", tmp_path / "scenes", "-o", dst, "--lod", "0.2,0.5", "--count", "9",
                              check=False), "drop --ratio")
