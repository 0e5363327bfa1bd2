"""The native tile rasteriser (render/native.py, render/csrc/raster.c) against the torch compositor
(render/rasterize.py, whose autograd gradients test_render.py gradchecks in float64) and the
independent reference renderer (../shared/tools/refrender.py): same images, same live pairs, same
gradients, the dispatch between the two paths and the loader's fallback."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sundae_compress.metrics import psnr
from sundae_compress.render import Camera, native, render
from sundae_compress.render.project import project, view_colors
from sundae_compress.render.rasterize import composite

ROOT = Path(__file__).resolve().parents[1]
REFRENDER = ROOT.parent / "shared" / "tools" / "refrender.py"
ASSETS = ROOT.parent / "shared" / "assets"


@pytest.fixture(params=["native", "torch"])
def compositor(request):
    """Runs the test once with each compositor and checks that exactly that one ran."""
    with native.use(request.param == "native"):
        native.ran.clear()
        yield request.param
        assert native.ran == {request.param}, f"{request.param} requested, {native.ran} ran"


def _scene(n=500, seed=0, opacity_shift=0.0, spread=(1.2, 0.9, 0.4), scale=-2.3):
    """Random float32 scene in front of an identity camera: anisotropic, some off screen, some
    behind the camera, opacities from faint to saturating."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor(spread) + torch.tensor([0.0, 0.0, 4.0])
    means[: n // 20, 2] = -1.0                            # behind the camera
    means[n // 20: n // 10, 0] += 6.0                     # off screen to the right
    return {"means": means, "quats": torch.randn(n, 4, generator=g),
            "scales": scale + 0.6 * torch.randn(n, 3, generator=g),
            "opacities": 2.0 * torch.randn(n, generator=g) + opacity_shift,
            "sh": 0.4 * torch.randn(n, 4, 3, generator=g)}


def _composite_both(p, cam, features=None):
    proj = project(p["means"], p["quats"], p["scales"], p["opacities"], cam)
    vals = [view_colors(p["means"], p["sh"], proj.index, cam), proj.depth[:, None]]
    if features is not None:
        vals.append(features.index_select(0, proj.index))
    vals = torch.cat(vals, 1)
    out = {}
    for name in ("native", "torch"):
        info = {}
        with native.use(name == "native"), torch.no_grad():
            out[name] = (composite(proj, vals, cam.width, cam.height, stats=info), info)
    return out


def test_native_kernel_is_built():
    """`pip install -e .` / `make venv` builds the rasteriser; the tests need it."""
    assert native.available(), "native rasteriser not built: run `pip install -e .`"
    assert Path(native._NATIVE.load()._name).name.startswith("_raster")


@pytest.mark.parametrize("size", [(64, 48), (97, 61), (16, 16), (5, 300)])
def test_native_matches_torch_compositor(size):
    """Same image (to float32 rounding) and exactly the same live pairs, on image sizes that are
    and are not multiples of the 16-pixel tile."""
    W, H = size
    p = _scene(seed=W)
    feats = torch.randn(len(p["means"]), 2, generator=torch.Generator().manual_seed(1))
    f = 0.9 * max(W, H)
    cam = Camera(np.eye(4), f, f, W / 2 + 0.3, H / 2 - 0.2, W, H)
    out = _composite_both(p, cam, feats)
    (a, ia), (b, ib) = out["native"], out["torch"]
    assert ia["compositor"] == "native" and ib["compositor"] == "torch"
    assert a.shape == b.shape == (W * H, 3 + 1 + 2 + 1)
    assert ib["n_pairs"] > 2 * W * H                      # the scene really covers the image
    assert ia["n_pairs"] == ib["n_pairs"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_native_early_termination_and_clamp():
    """Dense opaque scene: most pixels saturate (T <= 1e-4 early), many alphas clamp at 0.99."""
    W, H = 80, 60
    p = _scene(n=3000, seed=3, opacity_shift=6.0, spread=(0.6, 0.45, 0.4), scale=-1.8)
    cam = Camera(np.eye(4), 70.0, 70.0, W / 2, H / 2, W, H)
    out = _composite_both(p, cam)
    (a, ia), (b, ib) = out["native"], out["torch"]
    alpha = b[:, -1]
    assert float((alpha > 1 - 1e-4).float().mean()) > 0.5  # saturated pixels: early termination
    assert ia["n_pairs"] == ib["n_pairs"] < 0.5 * ib["n_candidate_pairs"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_native_empty_and_single():
    W, H = 40, 30
    cam = Camera(np.eye(4), 50.0, 50.0, W / 2, H / 2, W, H)
    one = {"means": torch.tensor([[0.0, 0.0, 4.0]]), "quats": torch.tensor([[1.0, 0, 0, 0]]),
           "scales": torch.full((1, 3), math.log(0.12)), "opacities": torch.tensor([1.3]),
           "sh": torch.zeros(1, 1, 3)}
    with native.use(True):
        out = render(one, cam, background=(0.1, 0.2, 0.3))
    var = (50.0 * 0.12 / 4.0) ** 2 + 0.3
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    op = 1 / (1 + math.exp(-1.3))
    a = op * np.exp(-0.5 * ((xs - W / 2) ** 2 + (ys - H / 2) ** 2) / var)
    a = np.where(a >= 1 / 255, np.minimum(a, 0.99), 0.0)
    np.testing.assert_allclose(out.alpha.numpy()[..., 0], a, atol=1e-6)
    assert out.info["compositor"] == "native"
    far = dict(one, means=torch.tensor([[50.0, 0.0, 4.0]]))
    with native.use(True):
        out = render(far, cam, background=(0.1, 0.2, 0.3))
    assert float(out.alpha.abs().max()) == 0.0


def _refrender():
    if not REFRENDER.is_file():
        pytest.skip(f"reference renderer not found at {REFRENDER}")
    spec = importlib.util.spec_from_file_location("refrender_oracle_raster", REFRENDER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_both_compositors_match_reference_renderer(compositor):
    """Random SH-3 scene, anisotropic splats, off-centre principal point: >= 45 dB against the
    independent reference renderer with either compositor."""
    rr = _refrender()
    g = torch.Generator().manual_seed(11)
    n = 300
    G = {"means": torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.7, 0.5]),
         "quats": torch.randn(n, 4, generator=g), "scales": -2.5 + 0.7 * torch.randn(n, 3, generator=g),
         "opac": torch.randn(n, generator=g) * 2, "sh": 0.4 * torch.randn(n, 16, 3, generator=g)}
    for V in rr.orbit_cameras(G, n=3, up_axis=2, sign=1):
        ref = rr.render(G, V, 70.0, 75.0, 30.0, 26.0, 64, 48, bg=(0.2, 0.3, 0.4))
        cam = Camera(V.double().numpy(), 70.0, 75.0, 30.0, 26.0, 64, 48)
        ours = render({"means": G["means"], "quats": G["quats"], "scales": G["scales"],
                       "opacities": G["opac"], "sh": G["sh"]}, cam, backend="torch", background=(0.2, 0.3, 0.4))
        assert ours.info["compositor"] == compositor
        assert float(psnr(ours.rgb.clamp(0, 1), ref)) >= 45.0


def test_native_matches_torch_on_real_scene_crop():
    """donut, one orbit view at 160x120: native and torch compositors give the same image."""
    path = ASSETS / "donut.ply"
    if not path.is_file():
        pytest.skip("donut.ply not available")
    from sundae_compress.io.ply import read_ply
    from sundae_compress.render.cameras import ViewFrame, near_views

    gs = read_ply(path)
    cam = near_views(ViewFrame.of(gs), n=1, size=(160, 120))[0]
    imgs = {}
    for name in ("native", "torch"):
        with native.use(name == "native"), torch.no_grad():
            o = render(gs, cam, backend="torch")
        assert o.info["compositor"] == name
        imgs[name] = (o, o.info["n_pairs"])
    assert imgs["native"][1] == imgs["torch"][1] > 100_000
    for k in ("rgb", "alpha"):
        torch.testing.assert_close(getattr(imgs["native"][0], k), getattr(imgs["torch"][0], k), atol=1e-5, rtol=0)


def test_dispatch_keeps_torch_for_float64():
    """float64 tensors always take the torch compositor (the C path is float32 only); float32
    training renders take the native one (C backward)."""
    p = {k: v.double() for k, v in _scene(n=50).items()}
    cam = Camera(np.eye(4), 30.0, 30.0, 16.0, 12.0, 32, 24)
    native.ran.clear()
    out = render(p, cam, backend="torch")
    assert out.info["compositor"] == "torch" and native.ran == {"torch"}
    g = {k: v.float().requires_grad_(True) for k, v in p.items()}
    native.ran.clear()
    out = render(g, cam, backend="torch")
    assert out.info["compositor"] == "native" and native.ran == {"native"}
    out.rgb.sum().backward()
    assert all(v.grad is not None for v in g.values())


def test_missing_rasteriser_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(native._NATIVE, "load", lambda: None)
    monkeypatch.setattr(native._NATIVE, "error", "ImportError: test")
    p = _scene(n=60)
    cam = Camera(np.eye(4), 30.0, 30.0, 16.0, 12.0, 32, 24)
    native.ran.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        a = render(p, cam, backend="torch")
        b = render(p, cam, backend="torch")
    assert a.info["compositor"] == b.info["compositor"] == "torch" and native.ran == {"torch"}
    missing = [w for w in caught if issubclass(w.category, native.NativeRasterMissing)]
    assert len(missing) == 1 and "pip install -e ." in str(missing[0].message)
    with pytest.raises(RuntimeError, match="not built"), native.use(True):
        render(p, cam, backend="torch")


def _grads(p, cam, feats, seed, name):
    """Gradients of a random linear + quadratic loss on every output channel, with one compositor."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    f = feats.clone().requires_grad_(True)
    with native.use(name == "native"):
        out = render(leaves, cam, features=f, backend="torch", background=(0.2, 0.1, 0.3))
    assert out.info["compositor"] == name
    img = torch.cat([out.rgb, out.alpha, out.depth, out.features], -1)
    w = torch.randn(img.shape, generator=torch.Generator().manual_seed(seed))
    loss = (img * w).sum() + (img * img).sum()
    return img.detach(), torch.autograd.grad(loss, list(leaves.values()) + [f])


def _assert_grads_close(ga, gb, rel):
    for a, b in zip(ga, gb):
        scale = float(b.abs().max())
        assert scale > 0
        torch.testing.assert_close(a, b, atol=rel * scale, rtol=1e-3)
        assert float((a - b).norm()) <= rel * float(b.norm())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_native_gradients_match_torch_autograd(seed):
    """C backward vs autograd through the torch compositor, on random scenes with clamped alphas,
    saturated pixels and partial tiles: all parameters, features included."""
    W, H = 53, 37
    p = _scene(n=300, seed=seed, opacity_shift=1.5 * seed, spread=(0.8, 0.6, 0.4))
    feats = torch.randn(300, 2, generator=torch.Generator().manual_seed(seed + 10))
    cam = Camera(np.eye(4), 45.0, 45.0, W / 2 + 0.4, H / 2 - 0.3, W, H)
    ia, ga = _grads(p, cam, feats, seed, "native")
    ib, gb = _grads(p, cam, feats, seed, "torch")
    torch.testing.assert_close(ia, ib, atol=2e-5, rtol=1e-5)
    assert float(ib[..., 3].gt(0.5).float().mean()) > 0.3       # the Gaussians cover the image
    _assert_grads_close(ga, gb, 1e-4)


def test_native_gradients_match_torch_on_real_scene_crop():
    """donut: the central 64x48 crop of a 320x240 view, all 45 k Gaussians trainable."""
    path = ASSETS / "donut.ply"
    if not path.is_file():
        pytest.skip("donut.ply not available")
    from sundae_compress.io.ply import read_ply
    from sundae_compress.render.cameras import ViewFrame, near_views

    gs = read_ply(path)
    full = near_views(ViewFrame.of(gs), n=1, size=(320, 240))[0]
    cam = Camera(full.viewmat, full.fx, full.fy, full.cx - 128, full.cy - 96, 64, 48)
    p = {k: v for k, v in gs.to_torch().items() if k != "features"}
    feats = torch.randn(len(gs), 1, generator=torch.Generator().manual_seed(3))
    ia, ga = _grads(p, cam, feats, 7, "native")
    ib, gb = _grads(p, cam, feats, 7, "torch")
    torch.testing.assert_close(ia, ib, atol=2e-5, rtol=1e-5)
    assert float(ib[..., 3].gt(0.5).float().mean()) > 0.5
    _assert_grads_close(ga, gb, 1e-4)
