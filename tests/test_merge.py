"""Merge-aware pruning: moment matching, exact counts, robustness, and a rendered quality check."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from sundae_compress.gaussians import GaussianSet, normalize_quats
from sundae_compress.prune import moments as mm
from sundae_compress.prune.collapse import collapse_to, greedy_matching
from sundae_compress.prune.merge import merge_groups, merge_into, prune


def _merge(gs, keep, mode):
    """Survivors ``keep`` with the rest folded in (assign), or the scene collapsed to as many."""
    return merge_into(gs, keep) if mode == "assign" else collapse_to(gs, len(np.unique(keep)))


REFRENDER = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "refrender.py"


def _gs(means, quats, scales, alphas, rgb, features=None):
    a = np.asarray(alphas, np.float64)
    sh = ((np.asarray(rgb, np.float32) - 0.5) / 0.28209479177387814)[:, None, :]
    return GaussianSet(means=means, quats=normalize_quats(np.asarray(quats, np.float32)), scales=scales,
                       opacities=np.log(a / (1 - a)), sh=sh, features=features)


def _finite(gs):
    return bool(gs.finite_mask().all())


def test_identical_pair_merges_to_itself():
    q = normalize_quats(np.array([[0.9, 0.1, -0.3, 0.2]], np.float32))
    one = _gs([[0.3, -1.0, 2.0]], q, [[-3.0, -4.0, -5.0]], [0.3], [[0.2, 0.5, 0.9]], features=[[1.0, -2.0]])
    two = GaussianSet.concat([one, one])
    m = merge_groups(two, np.array([0, 0]), 1)
    assert len(m) == 1
    np.testing.assert_allclose(m.means, one.means, atol=1e-6)
    np.testing.assert_allclose(m.covariances(), one.covariances(), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(m.sh, one.sh, atol=1e-6)
    np.testing.assert_allclose(m.features, one.features, atol=1e-6)
    # coverage rule: same footprint, twice the ink -> alpha doubles (capped at 0.99)
    np.testing.assert_allclose(m.alphas, [0.6], atol=1e-4)
    # through merge_into as well: keep one of the two duplicates
    m2 = merge_into(two, [1])
    np.testing.assert_allclose(m2.means, one.means, atol=1e-6)
    np.testing.assert_allclose(m2.covariances(), one.covariances(), rtol=1e-4, atol=1e-12)


def test_group_moments_match_hand_computation():
    rng = np.random.default_rng(3)
    gs = _gs(rng.normal(size=(3, 3)), rng.normal(size=(3, 4)), rng.normal(-1.0, 0.3, (3, 3)), [0.2, 0.5, 0.9],
             rng.random((3, 3)))
    m = merge_groups(gs, np.zeros(3, np.int64), 1)
    # hand computation: mass = alpha * pi * (product of the two largest standard deviations)
    cov = gs.covariances()
    w = []
    for i in range(3):
        s = sorted(np.exp(gs.scales[i].astype(np.float64)))
        w.append(float(gs.alphas[i]) * math.pi * s[1] * s[2])
    w = np.array(w)
    mu = (w[:, None] * gs.means.astype(np.float64)).sum(0) / w.sum()
    sig = np.zeros((3, 3))
    for i in range(3):
        d = gs.means[i].astype(np.float64) - mu
        sig += w[i] * (cov[i] + np.outer(d, d))
    sig /= w.sum()
    np.testing.assert_allclose(m.means[0], mu, atol=1e-5)
    np.testing.assert_allclose(m.covariances()[0], sig, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(m.sh[0, 0], (w[:, None] * gs.sh[:, 0]).sum(0) / w.sum(), atol=1e-5)
    # coverage-preserving opacity: alpha_m * area_m = sum alpha_i area_i
    ev = np.sqrt(np.sort(np.linalg.eigvalsh(sig)))
    assert m.alphas[0] == pytest.approx(min(0.99, w.sum() / (math.pi * ev[1] * ev[2])), rel=1e-4)


def test_rotation_scales_roundtrip_and_right_handed(tiny_scene):
    gs = tiny_scene(200, seed=1)
    c6 = mm.cov6_from(gs.quats, gs.scales)
    q, s = mm.cov6_to_rotation_scales(c6)
    back = mm.cov6_from(q, s)
    np.testing.assert_allclose(back, c6, rtol=1e-3, atol=1e-3 * np.abs(c6).max(1, keepdims=True).min())
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


def test_lone_survivors_unchanged(tiny_scene):
    gs = tiny_scene(300, seed=2, sh_degree=1)
    keep = np.arange(0, 300, 3)
    out = merge_into(gs, keep)
    slot_used = np.zeros(len(keep), bool)
    # survivors that received no member are copied bit for bit
    from sundae_compress.prune.merge import assign_to_survivors

    slot = assign_to_survivors(gs, keep)
    slot_used[np.unique(slot[np.setdiff1d(np.arange(300), keep)])] = True
    lone = ~slot_used
    assert lone.any()
    np.testing.assert_array_equal(out.means[lone], gs.means[keep][lone])
    np.testing.assert_array_equal(out.opacities[lone], gs.opacities[keep][lone])
    np.testing.assert_array_equal(out.sh[lone], gs.sh[keep][lone])


@pytest.fixture(scope="module")
def donut_part():
    from conftest import ASSETS_DIR

    if not (ASSETS_DIR / "donut.ply").is_file():
        pytest.skip("shared scenes missing")
    from sundae_compress.io.ply import read_ply

    gs = read_ply(ASSETS_DIR / "donut.ply")
    return gs, gs.subset(np.arange(0, len(gs), 9))  # ~5k Gaussians spread over the whole object


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25, 0.5])
@pytest.mark.parametrize("mode", ["assign", "collapse"])
def test_exact_counts_real_scene(donut_part, ratio, mode):
    _, gs = donut_part
    count = int(round(ratio * len(gs)))
    keep = np.random.default_rng(0).choice(len(gs), count, replace=False)
    out = _merge(gs, keep, mode)
    assert len(out) == count
    assert _finite(out)
    assert out.sh.shape[1:] == gs.sh.shape[1:]


def test_nan_free_with_duplicates_and_extreme_scales(tiny_scene):
    gs = tiny_scene(400, seed=4, sh_degree=2, features=3)
    gs.means[100:200] = gs.means[0]          # a pile of exact duplicates
    gs.quats[100:200] = gs.quats[0]
    gs.scales[100:200] = gs.scales[0]
    gs.scales[200:250] = -30.0               # vanishingly small
    gs.scales[250:300] = [3.0, 3.0, -25.0]   # huge, perfectly flat
    gs.opacities[300:320] = -40.0            # transparent
    gs.opacities[320:340] = 40.0             # opaque
    for mode in ("assign", "collapse"):
        for count in (1, 7, 40, 399):
            out = _merge(gs, np.arange(count), mode)
            assert len(out) == count
            assert _finite(out), (mode, count)
            assert np.allclose(np.linalg.norm(out.quats, axis=1), 1.0, atol=1e-4)


def test_features_merged_mass_weighted():
    gs = _gs([[0, 0, 0], [0.01, 0, 0]], [[1, 0, 0, 0], [1, 0, 0, 0]], [[-2, -2, -2], [-2, -2, -2]], [0.25, 0.75],
             [[0, 0, 0], [1, 1, 1]], features=[[4.0, 0.0], [0.0, 8.0]])
    out = merge_into(gs, [0])
    np.testing.assert_allclose(out.features[0], [1.0, 6.0], atol=1e-5)  # weights 1:3
    np.testing.assert_allclose(out.colors[0], [0.75, 0.75, 0.75], atol=1e-5)
    out_c = collapse_to(gs, 1)
    np.testing.assert_allclose(out_c.features[0], [1.0, 6.0], atol=1e-5)


def test_deterministic(donut_part):
    _, gs = donut_part
    keep = np.arange(0, len(gs), 10)
    for mode in ("assign", "collapse"):
        a, b = _merge(gs, keep, mode), _merge(gs, keep, mode)
        for f in ("means", "quats", "scales", "opacities", "sh"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_greedy_matching_equals_sequential_greedy():
    rng = np.random.default_rng(5)
    n = 60
    u = rng.integers(0, n, 400)
    v = rng.integers(0, n, 400)
    ok = u != v
    u, v = u[ok], v[ok]
    c = rng.integers(0, 50, len(u)).astype(float)  # with ties
    got = greedy_matching(u, v, c, n, max_pairs=10 ** 6)
    used, want = set(), []
    for e in np.lexsort((np.arange(len(c)), c)):
        if u[e] in used or v[e] in used:
            continue
        used.update((u[e], v[e]))
        want.append(e)
    assert sorted(got.tolist()) == sorted(want)
    few = greedy_matching(u, v, c, n, max_pairs=5)
    assert list(few) == want[:5]


def test_prune_convenience(tiny_scene):
    pytest.importorskip("sundae_compress.prune.select")
    gs = tiny_scene(500, seed=6, sh_degree=0)
    for merge in (None, "assign", "collapse"):
        out = prune(gs, 50, method="random", merge=merge)
        assert len(out) == 50 and _finite(out)


def _refrender():
    if not REFRENDER.is_file():
        pytest.skip("refrender.py missing")
    spec = importlib.util.spec_from_file_location("refrender_t", REFRENDER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_merged_scene_renders_closer_than_selection(donut_part):
    import torch

    rr = _refrender()
    _, full = donut_part  # the ~5k-Gaussian donut subset is the "original" (keeps this test fast)

    def g(gs):
        return {"means": torch.from_numpy(gs.means), "quats": torch.from_numpy(gs.quats),
                "scales": torch.from_numpy(gs.scales), "opac": torch.from_numpy(gs.opacities),
                "sh": torch.from_numpy(gs.sh)}

    W, H, f = 80, 60, 75.0
    cams = rr.orbit_cameras(g(full), n=6)[::3]
    refs = [rr.render(g(full), V, f, f, W / 2, H / 2, W, H) for V in cams]

    def psnr(gs):
        return float(np.mean([rr.psnr(rr.render(g(gs), V, f, f, W / 2, H / 2, W, H), r) for V, r in zip(cams, refs)]))

    keep = np.sort(np.random.default_rng(0).choice(len(full), len(full) // 10, replace=False))
    sel = psnr(full.subset(keep))
    assign = psnr(merge_into(full, keep))
    collapse = psnr(collapse_to(full, len(keep)))
    assert assign > sel + 2.0, (sel, assign)
    assert collapse > sel + 2.0, (sel, collapse)
