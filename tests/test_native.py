"""The native kernel and its numpy / scipy fallbacks, each checked against independent ground
truth (brute force, hand-written formulas), never against each other or themselves; the loader;
the build's missing-compiler message; and bounded time on clouds that used to hang."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from sundae_compress.gaussians import GaussianSet, normalize_quats
from sundae_compress.prune import collapse, graph, native
from sundae_compress.prune import moments as mm

ROOT = Path(__file__).resolve().parents[1]


def _cloud(seed=0):
    """Clusters, a flat patch, a group of 40 identical centres (more than k + 1) and floaters."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, 0.05, (400, 3)) + c for c in rng.uniform(-1, 1, (3, 3))]
    flat = np.c_[rng.uniform(-1, 1, (300, 2)), np.full(300, 0.3)]
    same = np.tile(rng.uniform(-1, 1, (1, 3)), (40, 1))
    far = rng.uniform(-20, 20, (10, 3))
    return np.concatenate(parts + [flat, same, far]).astype(np.float32)


def _brute_knn(x, k):
    """Sorted squared distances of the k nearest other points (float64 brute force)."""
    xd = x.astype(np.float64)
    d2 = ((xd[:, None, :] - xd[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return np.sort(d2, axis=1)[:, :k]


def test_knn_graph_equals_brute_force(backend):
    x = _cloud()
    k = 8
    truth = _brute_knn(x, k)
    thr = graph.THRESHOLD_FACTOR * np.sqrt(np.sort(truth[:, -1])[(len(x) - 1) // 2])
    g = graph.knn_graph(x, k=k)
    assert g.threshold == pytest.approx(thr, rel=1e-5)
    kept = truth <= np.float32(thr) ** 2
    got = np.where(g.nbr >= 0, g.d2, np.inf)
    np.testing.assert_allclose(np.where(kept, truth, np.inf), got, rtol=1e-5, atol=1e-9)
    # every listed neighbour is at the listed distance, never the point itself
    i = np.repeat(np.arange(len(x)), k).reshape(-1, k)
    ok = g.nbr >= 0
    d = ((x[i[ok]].astype(np.float64) - x[g.nbr[ok]]) ** 2).sum(1)
    np.testing.assert_allclose(d, g.d2[ok], rtol=1e-5, atol=1e-9)
    assert (g.nbr != i).all()


def _brute_scores(x, k):
    """Scores from the brute-force graph and the dense formula (float64)."""
    xd = x.astype(np.float64)
    d2 = ((xd[:, None] - xd[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    dk = np.take_along_axis(d2, order, 1)
    thr2 = (graph.THRESHOLD_FACTOR * np.sqrt(np.sort(dk[:, -1])[(len(x) - 1) // 2])) ** 2
    keep = dk <= thr2
    s2 = np.sqrt(dk[keep]).var()
    w = np.where(keep, np.exp(-dk / (2 * s2)) if s2 > 0 else 1.0, 0.0)  # sigma^2 = 0: weight 1
    h = (w[:, :, None] * (xd[:, None, :] - xd[order])).sum(1)
    return np.linalg.norm(h, axis=1)


def test_scores_equal_dense_laplacian_of_brute_force_graph(backend):
    x = _cloud(1)
    want = _brute_scores(x, 8)
    np.testing.assert_allclose(graph.spectral_scores(x, k=8), want, rtol=2e-4, atol=1e-6 * want.max())


def test_nearest_points_equal_brute_force(backend):
    rng = np.random.default_rng(2)
    ref = _cloud(2)
    q = np.concatenate([ref[::7] + rng.normal(0, 0.01, ref[::7].shape), rng.uniform(-30, 30, (50, 3))])
    q = q.astype(np.float32)
    got = graph.nearest_points(ref, q)
    d2 = ((q[:, None].astype(np.float64) - ref[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2[np.arange(len(q)), got], d2.min(1), rtol=1e-6, atol=1e-12)
    # among identical reference centres the lowest index wins
    same = np.flatnonzero((ref == ref[1500]).all(1))
    assert len(same) == 40
    assert (graph.nearest_points(ref, ref[same[5:6]]) == same[0]).all()


def _scene(n, seed=3):
    rng = np.random.default_rng(seed)
    return GaussianSet(means=rng.normal(size=(n, 3)), quats=normalize_quats(rng.normal(size=(n, 4))),
                       scales=rng.normal(-3, 0.7, (n, 3)), opacities=rng.normal(0, 1.5, n),
                       sh=rng.normal(0, 0.5, (n, 4, 3)))


def test_covariances_equal_rotation_formula(backend):
    gs = _scene(500)
    got = mm.cov6_to_mat(mm.cov6_from(gs.quats, gs.scales))
    np.testing.assert_allclose(got, gs.covariances(), rtol=1e-5, atol=1e-12)


def test_group_moments_equal_loop(backend):
    gs = _scene(300)
    rng = np.random.default_rng(4)
    group = rng.integers(0, 40, 300)
    group[:40] = np.arange(40)
    w = rng.uniform(0.1, 2.0, 300)
    cov6 = mm.cov6_from(gs.quats, gs.scales)
    anchor = gs.means[:40].astype(np.float64)
    wsum, mu, cov = mm.group_moments(group, 40, w, gs.means, cov6, anchor)
    full = gs.covariances()
    for g in range(40):
        m = group == g
        W = w[m].sum()
        mean = (w[m, None] * gs.means[m]).sum(0) / W
        d = gs.means[m].astype(np.float64) - mean
        c = (w[m, None, None] * (full[m] + d[:, :, None] * d[:, None, :])).sum(0) / W
        assert wsum[g] == pytest.approx(W)
        np.testing.assert_allclose(mu[g], mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(mm.cov6_to_mat(cov[g:g + 1])[0], c, rtol=1e-6, atol=1e-12)


def test_rotation_scales_roundtrip(backend):
    gs = _scene(400)
    q, s = mm.cov6_to_rotation_scales(mm.cov6_from(gs.quats, gs.scales))
    back = GaussianSet(means=gs.means, quats=q, scales=s, opacities=gs.opacities, sh=gs.sh)
    np.testing.assert_allclose(back.covariances(), gs.covariances(), rtol=2e-4, atol=1e-9)
    assert (np.linalg.det(GaussianSet.covariances(back)) > 0).all()


def test_edge_costs_equal_formula(backend):
    gs = _scene(200)
    rng = np.random.default_rng(5)
    u, v = rng.integers(0, 200, 500), rng.integers(0, 200, 500)
    cov6 = mm.cov6_from(gs.quats, gs.scales)
    w = rng.uniform(0.01, 1.0, 200)
    full = gs.covariances()
    logdet = np.linalg.slogdet(full + collapse.EPS_COV * np.eye(3))[1]
    app = gs.sh.reshape(200, -1)
    got = collapse.edge_costs(u, v, gs.means, cov6, w, logdet, app, 0.3)
    for e in range(0, 500, 7):
        i, j = u[e], v[e]
        p = np.clip(w[i] / (w[i] + w[j]), 1e-9, 1 - 1e-9)
        d = gs.means[i].astype(np.float64) - gs.means[j]
        m = p * full[i] + (1 - p) * full[j] + p * (1 - p) * np.outer(d, d) + collapse.EPS_COV * np.eye(3)
        want = 0.5 * (np.linalg.slogdet(m)[1] - p * logdet[i] - (1 - p) * logdet[j])
        want += 0.3 * ((app[i].astype(np.float64) - app[j]) ** 2).sum()
        assert got[e] == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_greedy_matching_equals_sequential_greedy(backend):
    rng = np.random.default_rng(6)
    n, ne = 300, 2000
    u, v = rng.integers(0, n, ne), rng.integers(0, n, ne)
    cost = rng.integers(0, 50, ne).astype(np.float64)  # many ties: broken by edge index
    chosen, used = [], np.zeros(n, bool)
    for e in sorted(range(ne), key=lambda e: (cost[e], e)):
        if u[e] != v[e] and not used[u[e]] and not used[v[e]]:
            used[u[e]] = used[v[e]] = True
            chosen.append(e)
    got = collapse.greedy_matching(u, v, cost, n, 10 ** 9)
    assert sorted(got.tolist()) == sorted(chosen)
    assert sorted(collapse.greedy_matching(u, v, cost, n, 25).tolist()) == sorted(chosen[:25])


def test_undirected_edges_equal_set(backend):
    rng = np.random.default_rng(7)
    nbr = np.array([rng.choice(100, 6, replace=False) for _ in range(100)])  # a kNN list has no repeats
    nbr[rng.random(nbr.shape) < 0.1] = -1
    u, v = collapse._undirected_edges(nbr)
    want = {(min(i, j), max(i, j)) for i in range(100) for j in nbr[i] if j >= 0 and j != i}
    assert (u < v).all() and len(u) == len(want) and set(zip(u.tolist(), v.tolist())) == want


def test_collapse_reaches_exact_count(backend):
    gs = _scene(600)
    out = collapse.collapse_to(gs, 150)
    assert len(out) == 150 and out.finite_mask().all()


# ---- the loader ------------------------------------------------------------------------------

def test_kernel_is_built():
    """`pip install -e .` / `make venv` builds the extension; the tests need it."""
    assert native.available(), "native kernel not built: run `pip install -e .`"
    assert Path(native._NATIVE.load()._name).name.startswith("_kernel")


def test_missing_kernel_warns_once(monkeypatch):
    monkeypatch.setattr(native._NATIVE, "load", lambda: None)
    monkeypatch.setattr(native._NATIVE, "error", "ImportError: test")
    native.ran.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert native.lib() is None
        assert native.lib() is None
        s = graph.spectral_scores(_cloud()[:200], k=4)
    assert np.isfinite(s).all()
    assert native.ran == {"numpy"}
    missing = [w for w in caught if issubclass(w.category, native.NativeKernelMissing)]
    assert len(missing) == 1 and "pip install -e ." in str(missing[0].message)


class _TestKernelMissing(RuntimeWarning):
    pass


def test_shared_loader_says_why_and_switches():
    """sundae_compress._native (the loader both natives use), without monkeypatching: a module that
    was never built, a built one lacking a declared function, and the real kernel."""
    import ctypes

    from sundae_compress._native import NativeLibrary
    from sundae_compress.render import native as raster_native

    absent = NativeLibrary("sundae_compress.prune._no_such_kernel", {}, what="test kernel",
                           fallback="the slow path", category=_TestKernelMissing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        with absent.use(False):
            assert absent.get() is None  # switched off: no attempt reported
        assert caught == []
        assert absent.get() is None and absent.get() is None
    assert absent.error.startswith("ModuleNotFoundError") and "_no_such_kernel" in absent.error
    assert len(caught) == 1 and caught[0].category is _TestKernelMissing
    assert caught[0].filename == __file__  # stacklevel: the warning points at get()'s caller
    assert str(caught[0].message) == (f"sundae-compress: test kernel not built ({absent.error}); using the "
                                      "slow path. Run `pip install -e .` to build it.")
    with pytest.raises(RuntimeError, match=r"the test kernel is not built \(ModuleNotFoundError"), absent.use(True):
        absent.get()
    assert absent.forced is None  # use() restores the switch, also after an exception

    lacking = NativeLibrary("sundae_compress.prune._kernel", {"no_such_function": (None, [])},
                            what="test kernel", fallback="-", category=_TestKernelMissing)
    assert not lacking.available() and lacking.error.startswith("AttributeError") and "no_such_function" in lacking.error

    for mod, name in ((native, "_kernel"), (raster_native, "_raster")):
        real = NativeLibrary(f"{mod.__package__}.{name}", mod._SIGNATURES, what="-", fallback="-",
                             category=_TestKernelMissing)
        cdll = real.get()
        assert cdll is not None and real.error == "" and real.load() is cdll  # loaded once
        for fn, (res, args) in mod._SIGNATURES.items():
            assert getattr(cdll, fn).restype is res and getattr(cdll, fn).argtypes == args
    assert native.lib().grid_build.restype is ctypes.c_int64


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to compare with")
def test_build_without_compiler_says_what_to_do(tmp_path):
    src = tmp_path / "src"
    for pkg in ("prune", "render"):
        shutil.copytree(ROOT / "sundae_compress" / pkg / "csrc", src / "sundae_compress" / pkg / "csrc")
    shutil.copy(ROOT / "setup.py", src / "setup.py")
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"))
    p = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "b"),
                        "--build-temp", str(tmp_path / "t")], cwd=src, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0
    assert "C compiler" in p.stderr and "apt-get install build-essential python3-dev" in p.stderr


# ---- bounded time on clouds that used to hang or go quadratic --------------------------------

@contextmanager
def _limit(seconds):
    def boom(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _awkward(kind, n=30_000):
    rng = np.random.default_rng(8)
    if kind == "coincident":
        return np.full((n, 3), 0.5, np.float32)
    if kind == "half coincident":
        x = rng.normal(size=(n, 3))
        x[: n // 2] = x[0]
        return x.astype(np.float32)
    if kind == "multi-scale":  # a mis-typed PLY column: finite values from 1e-30 to 1e30
        return (rng.normal(size=(n, 3)) * 10.0 ** rng.uniform(-30, 30, (n, 1))).astype(np.float32)
    if kind == "extreme":
        return (rng.choice([-1, 1], (n, 3)) * rng.uniform(1e37, 3.4e38, (n, 3))).astype(np.float32)
    if kind == "cluster in a huge extent":
        x = rng.normal(size=(n, 3)) * 1e-4
        x[0] = 1e7
        return x.astype(np.float32)
    if kind == "flat":
        return np.c_[rng.normal(size=(n, 2)), np.zeros(n)].astype(np.float32)
    if kind == "collinear":
        return np.c_[rng.normal(size=(n, 1)), np.zeros((n, 2))].astype(np.float32)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["coincident", "half coincident", "multi-scale", "extreme",
                                  "cluster in a huge extent", "flat", "collinear"])
def test_awkward_clouds_in_bounded_time(kind, backend):
    x = _awkward(kind)
    with _limit(60), warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        s = graph.spectral_scores(x)
        nbr = graph.knn_graph(x, k=8, threshold=np.inf).nbr
        near = graph.nearest_points(x[::3], x)
    assert s.shape == (len(x),) and not np.isnan(s).any() and (s >= 0).all()
    assert (nbr >= 0).all() and (nbr != np.arange(len(x))[:, None]).all()
    assert (near >= 0).all()
    if kind == "coincident":
        assert (s == 0).all() and (near == 0).all()
        # every point's 8 neighbours are other members, and the graph is not a star
        assert len(np.unique(nbr)) > len(x) // 2


def test_coincident_groups_give_exact_graph_and_scores(backend):
    """Groups larger than a grid cell's check size (256) take the reduced-search path."""
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(size=(1500, 3)), np.tile([[0.1, 0.2, 0.3]], (400, 1)),
                        np.tile([[5.0, 5.0, 5.0]], (300, 1)), np.tile([[-0.5, 0.0, 0.4]], (30, 1))])
    x = x.astype(np.float32)
    truth = _brute_knn(x, 16)
    for thr in (np.inf, None):
        g = graph.knn_graph(x, k=16, threshold=thr)
        kept = truth <= np.float32(g.threshold) ** 2
        np.testing.assert_allclose(np.where(g.nbr >= 0, g.d2, np.inf), np.where(kept, truth, np.inf),
                                   rtol=1e-5, atol=1e-9)
    want = _brute_scores(x, 16)
    assert (want[:1500] > 0).mean() > 0.9  # a real threshold, not 0
    np.testing.assert_allclose(graph.spectral_scores(x), want, rtol=2e-4, atol=1e-6 * want.max())
