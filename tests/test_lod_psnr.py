"""``--lod-psnr``: a level-of-detail ladder whose levels are chosen by novel-view PSNR targets
(issue 14). Real scene subsets (2,000 / 600 Gaussians of guitar.ply), no fine-tuning or a few
iterations: seconds. Every level is read back from the written file and scored independently."""

from __future__ import annotations

import json
import math

import pytest

from sundae_compress.api import compress, evaluate_output, evaluation_views, load_scene
from sundae_compress.errors import SundaeError
from sundae_compress.io.bundle import inspect_bundle, read_bundle
from sundae_compress.lod import parse_lod_psnr
from sundae_compress.quality.targets import Built, search_psnr
from test_targets import _subset, assert_one_line_error, run


@pytest.fixture(scope="module")
def scene(assets, tmp_path_factory):
    return _subset(assets, tmp_path_factory, 2000)


@pytest.fixture(scope="module")
def tiny(assets, tmp_path_factory):
    return _subset(assets, tmp_path_factory, 600)


def _level_novel(src, bundle, level):
    gs = load_scene(src)
    near, novel, _ = evaluation_views(gs, src)
    return evaluate_output(gs, bundle, near, novel, level=level)["novel"]["psnr"]


def test_levels_reach_their_targets_and_are_recorded(scene, tmp_path):
    out = tmp_path / "l.sundae"
    targets = [32.0, 36.0]
    rep = compress(scene, out, lod_psnr="36,32", finetune=False)  # any order; levels coarse first
    counts = [lv["count"] for lv in rep.levels]
    assert len(counts) == 2 and 0 < counts[0] < counts[1] < 2000
    top = inspect_bundle(out)["pipeline"]
    assert top["lod_psnr"] == targets and top["counts"] == counts
    for k, t in enumerate(targets):
        measured = _level_novel(scene, out, k)  # the written level, read back and scored independently
        assert t <= measured <= t + 1.0, (k, measured)
        rec = read_bundle(out, level=k).header["pipeline"]["target"]
        assert rec["requested"] == t and rec["reached"] is True and abs(rec["novel_psnr"] - measured) < 0.01
        assert rep.levels[k]["target"]["reached"] and abs(rep.levels[k]["novel_psnr"] - measured) < 0.01
    assert [lv["quality"] for lv in rep.levels] == ["low", "medium"]  # coarse levels: next lower preset
    assert "novel views (12, 480x360)" in rep.summary() and "near views" not in rep.summary()  # named sets
    text = run("sundae-inspect", out).stdout
    assert "--lod-psnr 32,36" in text and "target 32 dB" in text and "target 36 dB" in text, text
    assert "NOT reached" not in text


def test_finetuned_levels(scene, tmp_path):
    out = tmp_path / "f.sundae"
    rep = compress(scene, out, lod_psnr=[31, 34], finetune_options={"iterations": 5})
    assert all(lv["finetune"]["iterations"] == 5 for lv in rep.levels)
    for k, t in enumerate((31.0, 34.0)):
        assert _level_novel(scene, out, k) >= t


def test_unreachable_level_writes_nothing_unless_best_effort(tiny, tmp_path):
    out = tmp_path / "u.sundae"
    r = run("sundae-compress", tiny, "--lod-psnr", "25,90", "--no-finetune", "-o", out)
    assert_one_line_error(r, "--lod-psnr: level 1's target 90 dB is out of reach", "best found is",
                          "a higher --quality reaches further", "nothing written")
    assert not list(tmp_path.iterdir())
    r = run("sundae-compress", tiny, "--lod-psnr", "25,90,95", "--no-finetune", "-o", out, "--best-effort", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [lv["target"]["reached"] for lv in rep["levels"]] == [True, False]  # the ladder ends at the best found
    assert rep["levels"][1]["count"] == 600 and any("no level for 95 dB" in n for n in rep["notes"])
    assert "target 90 dB NOT reached" in run("sundae-inspect", out).stdout


@pytest.mark.parametrize("args,fragment", [
    (["--lod-psnr", "28,32", "--lod", "0.1,0.2"], "not both"),
    (["--lod-psnr", "28,32", "--ratio", "0.1"], "--lod-psnr sets the size of every level"),
    (["--lod-psnr", "28,32", "--target-psnr", "30"], "cannot be combined with --target-psnr"),
    (["--lod-psnr", "30"], "needs 2 to 8 targets"),
    (["--lod-psnr", "30,abc"], "'abc' is not a PSNR target"),
    (["--lod-psnr", "30,30"], "a target appears twice"),
    (["--lod-psnr", "30,,34"], "separated by commas"),
    (["--lod-psnr", "28,32", "-o", "x.ply"], "holds one scene"),
    (["--lod", "0.1,0.2", "--best-effort"], "--best-effort applies to --target-psnr and --lod-psnr"),
    (["--lod-psnr", "28,32", "--net"], "carry no compensation net"),
])
def test_option_conflicts(tiny, tmp_path, args, fragment):
    if "-o" in args:
        args = args[:-1] + [tmp_path / args[-1]]
    else:
        args = args + ["-o", tmp_path / "x.sundae"]
    assert_one_line_error(run("sundae-compress", tiny, *args), fragment)
    assert not list(tmp_path.iterdir())


def test_parse_lod_psnr():
    assert parse_lod_psnr("36, 28,32") == [28.0, 32.0, 36.0]
    with pytest.raises(SundaeError, match="0 to 100"):
        parse_lod_psnr("28,120")


def test_prior_gain_from_a_coarser_level_saves_builds():
    """The gain measured by one level's search seeds the next: fewer full builds for the same result."""
    def probe(c, q):  # ~2.6 dB per doubling, like the shared scenes
        return 20.0 + 2.6 * math.log2(c / 10)

    def build(c, q, limit):
        return Built(c, q, probe(c, q) + 6.0 - 0.8 * math.log2(c / 100), 10 * c, finetuned=True)

    args = (100_000, probe, lambda c, q: 10 * c, build)
    first = search_psnr(30.0, *args, finetune=True, qualities=("low",))
    assert first.reached and first.gains and all(g > 0 for _, g in first.gains)
    cold = search_psnr(33.0, *args, finetune=True, qualities=("low",))
    warm = search_psnr(33.0, *args, finetune=True, qualities=("low",), prior_gains=first.gains)
    assert warm.reached and 33.0 <= warm.built.psnr <= 34.0
    assert warm.builds < cold.builds, (warm.builds, cold.builds)


def test_batch_accepts_lod_psnr(scene, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.ply").write_bytes(scene.read_bytes())
    r = run("sundae-compress", src, "-o", tmp_path / "out", "--lod-psnr", "32,36", "--no-finetune")
    assert r.returncode == 0, r.stdout + r.stderr
    d = inspect_bundle(tmp_path / "out" / "a.sundae")
    assert d["pipeline"]["lod_psnr"] == [32.0, 36.0] and len(d["levels"]) == 2


def test_first_finetuned_build_stays_near_the_target_on_a_flat_curve():
    """Where the prune-only curve flattens (background-dominated views), the first build does not
    dive to a handful of Gaussians whose fine-tuning gain is meaningless (guitar 30 dB went to 15)."""
    def probe(c, q):  # like guitar: 0.55 dB per doubling below ~500 Gaussians, ~2.6 above
        return 26.9 + 0.55 * math.log2(c / 12) if c < 519 else 30.0 + 2.6 * math.log2(c / 519)

    built = []

    def build(c, q, limit):  # fine-tuning gain: -0.6 dB on a handful of Gaussians, +4 dB from ~500
        gain = -0.6 + 4.6 * min(1.0, max(0.0, math.log(c / 15) / math.log(500 / 15)))
        built.append(c)
        return Built(c, q, probe(c, q) + gain, 10 * c, finetuned=True)

    out = search_psnr(30.0, 90_000, probe, lambda c, q: 10 * c, build, finetune=True, qualities=("low",))
    at_target = min(c for c in range(1, 2000) if probe(c, "low") >= 30.0)
    assert built[0] >= at_target / 5, (built, at_target)
    assert out.reached and 30.0 <= out.built.psnr <= 31.0, (built, out.built.psnr)


def test_an_overshooting_finetuned_build_is_trimmed_without_another_finetune():
    """All builds spent and the smallest passing one 3 dB above the window: ``trim`` (fewer of its
    fine-tuned Gaussians, no new fine-tuning) brings it into the window; without ``trim`` it stays."""
    def probe(c, q):
        return 20.0 + 2.6 * math.log2(c / 10)

    def build(c, q, limit):  # a gain that jumps: every build either misses or overshoots
        return Built(c, q, probe(c, q) + (6.0 if c > 400 else -1.0), 10 * c, finetuned=True)

    trims = []

    def trim(b, level):  # pruning the fine-tuned Gaussians: the fine-tuned curve, lower counts
        trims.append((b.count, level))
        c = next(c for c in range(1, b.count) if probe(c, "q") + 6.0 >= level)
        return Built(c, b.quality, probe(c, "q") + 6.0, 10 * c, finetuned=True)

    args = (33.0, 100_000, probe, lambda c, q: 10 * c, build)
    plain = search_psnr(*args, finetune=True, qualities=("low",))
    assert plain.reached and plain.built.psnr > 34.0  # the overshoot this fixes
    out = search_psnr(*args, finetune=True, qualities=("low",), trim=trim)
    assert trims and trims[0][0] == plain.built.count and 33.0 < trims[0][1] < 34.0
    assert out.reached and 33.0 <= out.built.psnr <= 34.0 and out.built.bytes < plain.built.bytes


@pytest.mark.parametrize("layout", [None, 2])
def test_stages_trim_on_a_real_scene(scene, layout):
    """SceneStages.trim prunes a fine-tuned build's own Gaussians to the smallest count that keeps a
    level, and scores what reads back (bundle, or ladder level): here the fine-tuning is the identity,
    so the trimmed build must still reach the level with fewer Gaussians and fewer bytes."""
    from sundae_compress.api import load_for_render, prune_scene
    from sundae_compress.codec import quality_settings
    from sundae_compress.lod import layout2_settings
    from sundae_compress.quality.stages import SceneStages

    gs = load_scene(scene)
    near, novel, _ = evaluation_views(gs, scene)
    pick = (lambda q: layout2_settings(quality_settings(q))) if layout == 2 else quality_settings
    stages = SceneStages(gs, prune=lambda g, c: prune_scene(g, count=int(c)),
                         finetune=lambda pruned, c, s: (pruned, None, None, {"iterations": 0}),
                         settings=pick, info=lambda c, q, s: {}, read=load_for_render, novel=novel,
                         layout=layout)
    built = stages.build(1200, "medium")
    assert built.finetuned and built.count == 1200
    level = built.psnr - 2.0
    t = stages.trim(built, level)
    assert t is not None and t.count < built.count and t.bytes < built.bytes and t.psnr >= level
    assert t.payload["finetune"]["trimmed_from"] == 1200
    assert stages.trim(t, t.psnr + 5.0) is None  # nothing smaller reaches more
