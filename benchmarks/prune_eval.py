"""Shared helpers for the pruning benchmarks: scene loading, selectors and the refrender PSNR.

The PSNR is the one of ``../shared/tools/refrender.py`` (6 orbit views, 320x240, reference =
the original scene): its ``render``/``orbit_cameras`` are imported and fed the GaussianSet arrays
directly (the same numbers as writing a PLY and running the script, without the disk round trip).
Reference images are cached per scene under ``benchmarks/work/``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
REFRENDER = ROOT.parent / "shared" / "tools" / "refrender.py"
WORK = ROOT / "benchmarks" / "work"
SCENES = {"donut": "donut.ply", "guitar": "guitar.ply", "playbot": "playbot_125k.ply"}
W, H, F = 320, 240, 300.0

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sundae_compress.gaussians import GaussianSet  # noqa: E402


def refrender():
    """The reference renderer module (imported from ../shared/tools)."""
    if "refrender" not in sys.modules:
        spec = importlib.util.spec_from_file_location("refrender", REFRENDER)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["refrender"] = mod
    return sys.modules["refrender"]


def load_scene(name: str) -> GaussianSet:
    from sundae_compress.io.ply import read_ply

    return read_ply(ASSETS / SCENES.get(name, name))


def to_ref(gs: GaussianSet) -> dict:
    import torch

    ok = gs.finite_mask()
    return {"means": torch.from_numpy(gs.means[ok]), "quats": torch.from_numpy(gs.quats[ok]),
            "scales": torch.from_numpy(gs.scales[ok]), "opac": torch.from_numpy(gs.opacities[ok]),
            "sh": torch.from_numpy(gs.sh[ok])}


class Evaluator:
    """PSNR of pruned versions of one scene against the original, refrender's measurement."""

    def __init__(self, name: str, gs: GaussianSet = None, width: int = W, height: int = H, focal: float = F,
                 views: int = 6):
        import torch

        self.rr = refrender()
        self.gs = gs if gs is not None else load_scene(name)
        self.w, self.h, self.f = width, height, focal * width / W
        g = to_ref(self.gs)
        self.cams = self.rr.orbit_cameras(g, n=views)
        WORK.mkdir(parents=True, exist_ok=True)
        cache = WORK / f"ref_{name}_{width}x{height}_{views}.pt"
        if cache.exists():
            self.refs = torch.load(cache)
        else:
            self.refs = [self._render(g, v) for v in self.cams]
            torch.save(self.refs, cache)

    def _render(self, g, view):
        return self.rr.render(g, view, self.f, self.f, self.w / 2, self.h / 2, self.w, self.h)

    def psnr(self, gs: GaussianSet) -> float:
        return self.scores(gs)[0]

    def scores(self, gs: GaussianSet):
        """(mean PSNR, mean SSIM) over the views; SSIM is the project's (11x11 Gaussian window)."""
        from sundae_compress.metrics import ssim

        g = to_ref(gs)
        imgs = [self._render(g, v) for v in self.cams]
        p = float(np.mean([self.rr.psnr(i, r) for i, r in zip(imgs, self.refs)]))
        s = float(np.mean([float(ssim(i.float().clamp(0, 1), r.float().clamp(0, 1))) for i, r in zip(imgs, self.refs)]))
        return p, s


# ---- selectors: the project's when present, small stand-ins otherwise ----------------------------

def _standin_spectral(means, k=16):
    from scipy.spatial import cKDTree

    x = means.astype(np.float64)
    d, j = cKDTree(x).query(x, k=k + 1, workers=-1)
    d, j = d[:, 1:], j[:, 1:]
    sig2 = np.median(d[:, -1]) ** 2 + 1e-30
    a = np.exp(-d * d / sig2)
    lx = a.sum(1, keepdims=True) * x - np.einsum("nk,nkc->nc", a, x[j])
    return np.linalg.norm(lx, axis=1).astype(np.float32)


def spectral_scores(means, k=16):
    try:
        from sundae_compress.prune.graph import spectral_scores as real
    except ImportError:
        return _standin_spectral(means, k)
    return real(means, k=k)


def select(gs: GaussianSet, count: int, method: str, gamma: float = 0.5, seed: int = 0) -> np.ndarray:
    try:
        from sundae_compress.prune.select import select as real
    except ImportError:
        real = None
    if real is not None:
        return np.asarray(real(gs, count, method=method, gamma=gamma, seed=seed), np.int64)
    n = len(gs)
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))
    if method in ("opacity", "importance"):
        v = gs.alphas * np.exp(gs.scales.astype(np.float64).sum(1))
        if method == "opacity":
            v = gs.alphas.astype(np.float64)
        return np.sort(np.argsort(-v, kind="stable")[:count])
    if method == "spectral":
        s = spectral_scores(gs.means)
        r = np.argsort(np.argsort(s)) / max(n - 1, 1)
        # band-stop: keep the extremes, gamma = fraction of the budget from the high end
        hi = int(round(gamma * count))
        order = np.argsort(s, kind="stable")
        return np.sort(np.concatenate([order[n - hi:], order[:count - hi]]))
    raise ValueError(method)
