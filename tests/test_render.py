"""Renderer tests: closed forms, occlusion, gradients, SH, agreement with the reference renderer,
memory bounding, metrics and image helpers."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sundae_compress.errors import SundaeError
from sundae_compress.gaussians import GaussianSet
from sundae_compress.metrics import psnr, ssim
from sundae_compress.render import Camera, available_backends, render
from sundae_compress.render.sh import C0, eval_sh, sh_basis

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
REFRENDER = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "refrender.py"


def _refrender():
    if not REFRENDER.is_file():
        pytest.skip(f"reference renderer not found at {REFRENDER}")
    spec = importlib.util.spec_from_file_location("refrender_oracle", REFRENDER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _scene(path):
    if not path.is_file():
        pytest.skip(f"scene {path} not available")
    from sundae_compress.io.ply import read_ply
    return read_ply(path)


def _params(means, scales, opac, sh, quats=None, dtype=torch.float64):
    n = len(means)
    q = torch.tensor([[1.0, 0, 0, 0]] * n) if quats is None else quats
    return {k: torch.as_tensor(v, dtype=dtype) for k, v in
            dict(means=means, quats=q, scales=scales, opacities=opac, sh=sh).items()}


def _cam(w=32, h=24, f=40.0):
    return Camera(np.eye(4), f, f, w / 2, h / 2, w, h)


# -- closed forms ----------------------------------------------------------------------------
def test_single_isotropic_gaussian_matches_closed_form():
    W, H, f, z, s, op = 40, 30, 50.0, 4.0, 0.12, 0.8
    rgb0 = np.array([0.9, 0.5, 0.2])
    sh = torch.tensor((rgb0 - 0.5) / C0)[None, None]
    p = _params([[0.0, 0.0, z]], [[math.log(s)] * 3], [math.log(op / (1 - op))], sh)
    out = render(p, _cam(W, H, f), backend="torch", background=(0.1, 0.2, 0.3))
    var = (f * s / z) ** 2 + 0.3                      # projected variance + low-pass
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    r2 = (xs - W / 2) ** 2 + (ys - H / 2) ** 2
    a = op * np.exp(-0.5 * r2 / var)
    a = np.where(a >= 1 / 255, np.minimum(a, 0.99), 0.0)
    expect = a[..., None] * rgb0 + (1 - a[..., None]) * np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(out.rgb.numpy(), expect, atol=1e-9)
    np.testing.assert_allclose(out.alpha.numpy()[..., 0], a, atol=1e-9)
    d = out.depth.numpy()[..., 0]
    np.testing.assert_allclose(d[a > 0], z, rtol=1e-9)
    assert (a > 0).sum() > 50 and (a == 0).sum() > 50  # the cutoff is exercised


def test_two_gaussians_occlusion_order_independent():
    red, green = (np.array([1.0, 0, 0]) - 0.5) / C0, (np.array([0, 1.0, 0]) - 0.5) / C0
    means = [[0.0, 0.0, 3.0], [0.0, 0.0, 6.0]]
    sh = torch.tensor(np.stack([red, green]))[:, None]
    scales = [[math.log(0.3)] * 3] * 2
    opac = [4.0, 4.0]
    a = render(_params(means, scales, opac, sh), _cam(), backend="torch")
    b = render(_params(means[::-1], scales, opac, sh.flip(0)), _cam(), backend="torch")
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-12, rtol=0)
    c = a.rgb[12, 16]
    assert c[0] > 0.9 and c[1] < 0.05  # front (red) dominates
    assert abs(float(a.depth[12, 16, 0]) - 3.0) < 0.1


def test_nothing_visible_gives_background_and_zero_grads():
    p = _params([[0.0, 0.0, -3.0]], [[0.0] * 3], [2.0], torch.zeros(1, 1, 3))
    for v in p.values():
        v.requires_grad_(True)
    out = render(p, _cam(), backend="torch", background=(0.2, 0.4, 0.6))
    assert torch.allclose(out.rgb, torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64).expand(24, 32, 3))
    out.rgb.sum().backward()
    assert all(float(v.grad.abs().sum()) == 0 for v in p.values())


def test_features_splatted_with_colour_weights():
    g = torch.Generator().manual_seed(1)
    n = 20
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.5 + torch.tensor([0, 0, 4.0], dtype=torch.float64)
    p = _params(means, torch.full((n, 3), -1.5), torch.full((n,), 1.0), torch.randn(n, 1, 3, generator=g))
    feats = torch.cat([torch.ones(n, 1, dtype=torch.float64), means[:, 2:3]], 1)
    out = render(p, _cam(), features=feats, backend="torch")
    torch.testing.assert_close(out.features[..., 0:1], out.alpha)
    torch.testing.assert_close(out.features[..., 1:2], out.depth * out.alpha)


def test_gradcheck_all_parameters():
    g = torch.Generator().manual_seed(3)
    n, W, H = 3, 8, 6
    means = (torch.tensor([[0.0, 0.0, 3.0]]) + 0.3 * torch.randn(n, 3, generator=g)).double()
    means[:, 2] += torch.arange(n) * 0.4
    quats = torch.randn(n, 4, generator=g).double()
    scales = (math.log(0.25) + 0.3 * torch.randn(n, 3, generator=g)).double()
    opac = (0.2 * torch.randn(n, generator=g)).double()
    sh = (0.3 * torch.randn(n, 4, 3, generator=g)).double()
    feats = torch.randn(n, 2, generator=g).double()
    cam = Camera(np.eye(4), 9.0, 9.0, W / 2 + 0.1, H / 2 - 0.2, W, H)
    inputs = [t.requires_grad_(True) for t in (means, quats, scales, opac, sh, feats)]

    def fn(m, q, s, o, c, f):
        out = render({"means": m, "quats": q, "scales": s, "opacities": o, "sh": c}, cam, features=f,
                     backend="torch", background=(0.3, 0.1, 0.2))
        return torch.cat([out.rgb, out.alpha, out.depth, out.features], -1)

    assert fn(*inputs)[..., 3].gt(0.05).sum() > 15  # the Gaussians really cover the image
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


# -- spherical harmonics ---------------------------------------------------------------------
def _closed_form_sh(d):
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    pi = math.pi
    return np.stack([
        np.full_like(x, 0.5 / math.sqrt(pi)),
        -math.sqrt(3 / (4 * pi)) * y, math.sqrt(3 / (4 * pi)) * z, -math.sqrt(3 / (4 * pi)) * x,
        0.5 * math.sqrt(15 / pi) * x * y, -0.5 * math.sqrt(15 / pi) * y * z,
        0.25 * math.sqrt(5 / pi) * (3 * z * z - 1), -0.5 * math.sqrt(15 / pi) * x * z,
        0.25 * math.sqrt(15 / pi) * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * pi)) * y * (3 * x * x - y * y), 0.5 * math.sqrt(105 / pi) * x * y * z,
        -0.25 * math.sqrt(21 / (2 * pi)) * y * (5 * z * z - 1), 0.25 * math.sqrt(7 / pi) * z * (5 * z * z - 3),
        -0.25 * math.sqrt(21 / (2 * pi)) * x * (5 * z * z - 1), 0.25 * math.sqrt(105 / pi) * z * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * pi)) * x * (x * x - 3 * y * y)], 1)


def test_sh_basis_closed_form_and_orthonormal():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(500, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    for deg in (1, 2, 3):
        b = sh_basis(torch.from_numpy(d), deg).numpy()
        np.testing.assert_allclose(b, _closed_form_sh(d)[:, : (deg + 1) ** 2], atol=1e-12)
    # orthonormality on the sphere (Fibonacci lattice quadrature)
    n = 20000
    i = np.arange(n) + 0.5
    zf = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    pts = np.stack([np.sqrt(1 - zf ** 2) * np.cos(phi), np.sqrt(1 - zf ** 2) * np.sin(phi), zf], 1)
    b = sh_basis(torch.from_numpy(pts), 3).numpy()
    np.testing.assert_allclose(4 * math.pi * b.T @ b / n, np.eye(16), atol=2e-3)


def test_eval_sh_matches_reference_and_degree_truncation():
    rr = _refrender()
    g = torch.Generator().manual_seed(0)
    sh = torch.randn(200, 16, 3, generator=g)
    d = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=1)
    torch.testing.assert_close(eval_sh(sh, d), rr.sh_to_rgb(sh, d), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eval_sh(sh, d, 1), rr.sh_to_rgb(sh[:, :4], d), atol=1e-5, rtol=1e-5)


# -- agreement with the independent reference renderer ---------------------------------------
def _compare_with_reference(name, W, H, views):
    rr = _refrender()
    gs = _scene(ASSETS / name)
    G = {"means": torch.from_numpy(gs.means), "quats": torch.from_numpy(gs.quats),
         "scales": torch.from_numpy(gs.scales), "opac": torch.from_numpy(gs.opacities),
         "sh": torch.from_numpy(gs.sh)}
    cams = rr.orbit_cameras(G, n=8)
    f = 300.0 * W / 320
    out = []
    for k in views:
        V = cams[k]
        ref = rr.render(G, V, f, f, W / 2, H / 2, W, H)
        ours = render(gs, Camera(V.double().numpy(), f, f, W / 2, H / 2, W, H), backend="torch")
        out.append(float(psnr(ours.rgb.clamp(0, 1), ref)))
    return out


def test_matches_reference_renderer_random_sh3_scene():
    """A small random scene with SH degree 3, anisotropic splats and off-centre principal point."""
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
        assert float(psnr(ours.rgb.clamp(0, 1), ref)) >= 45.0


@pytest.mark.slow
def test_matches_reference_renderer_donut():
    for p in _compare_with_reference("donut.ply", 160, 120, [1]):
        assert p >= 45.0, p


@pytest.mark.slow
@pytest.mark.parametrize("name", ["guitar.ply", "playbot_125k.ply"])
def test_matches_reference_renderer_more_scenes(name):
    for p in _compare_with_reference(name, 160, 120, [0, 5]):
        assert p >= 45.0, p


# -- memory bound ----------------------------------------------------------------------------
def test_banded_compositing_bounds_pairs_and_matches():
    """The torch compositor's bands (CPU float32 renders normally take the native rasteriser)."""
    from sundae_compress.render import native

    with native.use(False):
        g = torch.Generator().manual_seed(5)
        n = 400
        means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.8, 0.3]) + torch.tensor([0, 0, 5.0])
        p = {"means": means, "quats": torch.randn(n, 4, generator=g), "scales": torch.full((n, 3), -2.0),
             "opacities": torch.full((n,), 0.5), "sh": torch.randn(n, 4, 3, generator=g) * 0.3}
        for v in p.values():
            v.requires_grad_(True)
        cam = Camera(np.eye(4), 150.0, 150.0, 96.0, 80.0, 192, 160)
        big = render(p, cam, backend="torch")
        grads_big = torch.autograd.grad(big.rgb.sum(), list(p.values()))
        budget = 70000
        small = render(p, cam, backend="torch", max_pairs=budget)
        assert small.info["n_bands"] >= 3 and big.info["n_bands"] == 1
        assert small.info["max_band_pairs"] <= budget        # no band exceeded its budget
        assert big.info["max_band_pairs"] > 2 * budget
        torch.testing.assert_close(small.rgb, big.rgb, atol=1e-5, rtol=0)
        grads_small = torch.autograd.grad(small.rgb.sum(), list(p.values()))
        for a, b in zip(grads_big, grads_small):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


# -- backends --------------------------------------------------------------------------------
def test_backend_selection_and_errors():
    import subprocess
    import sys
    code = "import sys, sundae_compress.render, sundae_compress.evaluate; print('gsplat' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    assert "torch" in available_backends()
    p = _params([[0.0, 0.0, 3.0]], [[-1.0] * 3], [1.0], torch.zeros(1, 1, 3), dtype=torch.float32)
    if "gsplat" not in available_backends():
        with pytest.raises(SundaeError):
            render(p, _cam(), backend="gsplat")
    with pytest.raises(SundaeError):
        render(p, _cam(), backend="vulkan")
    gs = GaussianSet(p["means"].numpy(), p["quats"].numpy(), p["scales"].numpy(), p["opacities"].numpy(),
                     p["sh"].numpy())
    torch.testing.assert_close(render(gs, _cam(), backend="auto").rgb.cpu(), render(p, _cam(), backend="torch").rgb)


@pytest.mark.gpu
def test_torch_and_gsplat_agree():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (no GPU on this machine)")
    if importlib.util.find_spec("gsplat") is None:
        pytest.skip("gsplat is not installed")
    rr = _refrender()
    gs = _scene(ASSETS / "donut.ply")
    G = {"means": torch.from_numpy(gs.means)}
    cams = rr.orbit_cameras(G, n=4)
    for V in cams[:2]:
        cam = Camera(V.double().numpy(), 300.0, 300.0, 160.0, 120.0, 320, 240)
        a = render(gs, cam, backend="torch", device="cuda").rgb.clamp(0, 1)
        b = render(gs, cam, backend="gsplat", device="cuda").rgb.clamp(0, 1)
        assert float(psnr(a, b)) >= 45.0


# -- metrics and image helpers ---------------------------------------------------------------
def test_psnr_ssim():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(40, 50, 3, generator=g)
    assert abs(float(psnr(a, (a + 0.1))) - 20.0) < 1e-4
    assert abs(float(ssim(a, a)) - 1.0) < 1e-6
    noisy = (a + 0.05 * torch.randn(40, 50, 3, generator=g)).clamp(0, 1)
    noisier = (a + 0.2 * torch.randn(40, 50, 3, generator=g)).clamp(0, 1)
    s1, s2 = float(ssim(noisy, a)), float(ssim(noisier, a))
    assert 1.0 > s1 > s2 > 0.0
    assert abs(float(ssim(a, noisy)) - s1) < 1e-6
    b = a.clone().requires_grad_(True)
    (1 - ssim(b, noisy)).backward()
    assert b.grad is not None and float(b.grad.abs().sum()) > 0
    # constant images: SSIM reduces to the luminance term (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1)
    c1 = 0.01 ** 2
    exp = (2 * 0.3 * 0.5 + c1) / (0.09 + 0.25 + c1)
    assert abs(float(ssim(torch.full((20, 20, 3), 0.3), torch.full((20, 20, 3), 0.5))) - exp) < 1e-5


def test_png_roundtrip_and_evaluate(tmp_path):
    from sundae_compress.evaluate import contact_sheet, evaluate, side_by_side
    from sundae_compress.io.images import read_image as load_png
    from sundae_compress.io.images import save_png

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", img)
    assert (load_png(tmp_path / "a.png") == img).all()
    assert side_by_side(img, img).shape[1] > 3 * 23
    assert contact_sheet([img] * 5, cols=2).shape[0] > 3 * 17
    n = 30
    gs = GaussianSet(rng.normal(size=(n, 3)) * 0.3 + [0, 0, 3], np.tile([1.0, 0, 0, 0], (n, 1)),
                     np.full((n, 3), -2.0), np.full(n, 1.0), rng.normal(size=(n, 1, 3)))
    cams = [_cam(), Camera(np.eye(4), 30.0, 30.0, 16.0, 12.0, 32, 24, "b")]
    same = evaluate(gs, gs, cams, backend="torch")
    assert same["n_views"] == 2 and same["psnr"] >= 99 and abs(same["ssim"] - 1) < 1e-6
    worse = evaluate(gs, gs.subset(np.arange(n // 2)), cams, backend="torch", side_by_side_dir=tmp_path / "cmp")
    assert worse["psnr"] < 40 and len(list((tmp_path / "cmp").glob("*.png"))) == 2
    post = evaluate(gs, gs, cams, backend="torch", postprocess=lambda o: o.rgb * 0.5)
    assert post["psnr"] < same["psnr"]
    from sundae_compress.evaluate import evaluate_view_sets, render_to_dir
    rep = evaluate_view_sets(gs, gs.subset(np.arange(n // 2)), {"cameras": cams}, side_by_side_path=tmp_path / "e.png",
                             backend="torch")
    assert rep["psnr"] == worse["psnr"] and [v["name"] for v in rep["cameras"]["views"]] == ["view_000", "b"]
    assert rep["worst"]["psnr"] == min(v["psnr"] for v in worse["views"])
    assert load_png(tmp_path / "e.png").shape[1] > 3 * 32
    paths = render_to_dir(gs, cams, tmp_path / "r")
    assert len(paths) == 2 and (tmp_path / "r" / "contact_sheet.png").is_file()


def test_read_image_formats_and_errors(tmp_path):
    """Photos go through Pillow: grey, RGBA and JPEG come back as uint8 RGB; a broken file is one line."""
    from PIL import Image

    from sundae_compress.io.images import read_image

    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == rgba[..., :3]).all()
    grey = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    assert (read_image(tmp_path / "g.png") == grey[..., None]).all()
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "j.jpg", quality=95)
    assert read_image(tmp_path / "j.jpg").shape == (5, 4, 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(SundaeError) as e:
        read_image(tmp_path / "bad.png")
    assert "bad.png" in str(e.value) and "\n" not in str(e.value)
