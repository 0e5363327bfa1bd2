"""Shared pytest fixtures.

* ``assets``: the folder with the real test scenes (``../shared/assets`` next to the repository),
  skipping the test when it is missing.
* ``tiny_scene``: a factory ``tiny_scene(n=256, seed=0, sh_degree=3, features=0)`` returning a
  small random but plausible :class:`GaussianSet` (deterministic for a seed).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see sundae_compress/__init__.py

from pathlib import Path  # noqa: E402

import numpy as np
import pytest

from sundae_compress.gaussians import SH_COEFFS, GaussianSet, normalize_quats

ASSETS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


@pytest.fixture(scope="session")
def assets() -> Path:
    """Folder holding donut.ply, guitar.ply and playbot_125k.ply."""
    if not (ASSETS_DIR / "donut.ply").is_file():
        pytest.skip(f"shared test scenes not found in {ASSETS_DIR}")
    return ASSETS_DIR


def make_tiny_scene(n: int = 256, seed: int = 0, sh_degree: int = 3, features: int = 0) -> GaussianSet:
    """``n`` random Gaussians in a unit cube: unit quaternions, log-scales around -4,
    opacity logits around 1, DC colours in [0, 1], small higher-order SH."""
    rng = np.random.default_rng(seed)
    k = SH_COEFFS[sh_degree]
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0] = (rng.random((n, 3)) - 0.5) / 0.28209479177387814
    sh[:, 1:] = rng.normal(0.0, 0.1, (n, k - 1, 3))
    return GaussianSet(
        means=rng.uniform(-1.0, 1.0, (n, 3)),
        quats=normalize_quats(rng.normal(size=(n, 4)).astype(np.float32)),
        scales=rng.normal(-4.0, 0.5, (n, 3)),
        opacities=rng.normal(1.0, 1.5, n),
        sh=sh,
        features=rng.normal(size=(n, features)) if features else None,
        meta={"source": f"tiny_scene(seed={seed})"},
    )


@pytest.fixture
def tiny_scene():
    """Factory: ``tiny_scene(n=256, seed=0, sh_degree=3, features=0) -> GaussianSet``."""
    return make_tiny_scene


@pytest.fixture(params=["native", "numpy"])
def backend(request):
    """Runs the test once with the native kernel and once with the numpy / scipy fallbacks, and
    checks afterwards that exactly that backend ran (the native run fails if the kernel is not
    built: ``pip install -e .``)."""
    from sundae_compress.prune import native

    with native.use(request.param == "native"):
        native.ran.clear()
        yield request.param
        assert native.ran == {request.param}, f"backend {request.param} requested, {native.ran} ran"


@pytest.fixture
def kernel():
    """The native kernel only (for comparisons against the independent cKDTree / numpy paths)."""
    from sundae_compress.prune import native

    with native.use(True):
        native.ran.clear()
        yield
        assert native.ran == {"native"}
