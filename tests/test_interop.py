"""Interop formats (spz, SOG, PlayCanvas compressed.ply, plain PLY): round trips on the real scenes,
field-level accuracy for SH degrees 0-3, one-line errors, atomic writes, the --format plumbing in
the CLI / API / batch, and a cross-check against the reference decoder (PlayCanvas
splat-transform, installed from npm into a cache folder; skipped when node/npm or the registry is
unavailable)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sundae_compress.errors import SundaeError
from sundae_compress.gaussians import GaussianSet, normalize_quats
from sundae_compress.io.atomic import atomic_write
from sundae_compress.io.compressed_ply import spatial_order
from sundae_compress.io.formats import FORMATS, format_of_path, read_scene, resolve_format, write_scene
from sundae_compress.io.ply import read_ply

from conftest import make_tiny_scene

SCENE_FORMATS = ["spz", "sog", "compressed-ply", "ply"]
#: Floors for the PSNR of a render of the decoded scene vs the Gaussians that were written
#: (project renderer, one generated view at 160x120). Measured (donut / guitar / playbot 20 %):
#: spz 57.0 / 71.2 / 48.3, sog 61.1 / 63.7 / 38.5 (SH palette), compressed.ply 60.2 / 71.6 / 55.5,
#: ply 100 (the PSNR cap: bit-exact). The floors sit about 3 dB below the lowest.
RENDER_FLOOR = {"ply": 99.0, "spz": 45.0, "sog": 35.0, "compressed-ply": 52.0}


def _render_psnr(a: GaussianSet, b: GaussianSet, views: int = 1) -> float:
    import torch

    from sundae_compress.metrics import psnr
    from sundae_compress.render import render
    from sundae_compress.render.cameras import generate_cameras

    cams = generate_cameras(a, n=views, width=160, height=120, seed=3)
    with torch.no_grad():
        vals = [float(psnr(render(a, c).rgb.clamp(0, 1), render(b, c).rgb.clamp(0, 1))) for c in cams]
    return float(np.mean(vals))


def _subset(gs: GaussianSet, share: float, seed: int = 0) -> GaussianSet:
    rng = np.random.default_rng(seed)
    return gs.subset(np.sort(rng.choice(len(gs), int(len(gs) * share), replace=False)))


@pytest.fixture(scope="module")
def scenes(assets):
    """The three shared scenes; playbot (SH degree 2) cut to 20 % to keep the SOG palette fast."""
    return {"donut": read_ply(assets / "donut.ply"), "guitar": read_ply(assets / "guitar.ply"),
            "playbot": _subset(read_ply(assets / "playbot_125k.ply"), 0.2)}


# -- real scenes ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", SCENE_FORMATS)
def test_shared_scenes_round_trip(scenes, fmt, tmp_path):
    for name, gs in scenes.items():
        out = tmp_path / f"{name}{FORMATS[fmt].suffix}"
        nbytes = write_scene(gs, out)
        assert nbytes == out.stat().st_size > 0
        back = read_scene(out)
        assert len(back) == len(gs), (name, fmt)
        assert back.sh_degree == gs.sh_degree
        lo, hi = gs.bounds()
        blo, bhi = back.bounds()
        ext = float((hi - lo).max())
        assert np.abs(blo - lo).max() < 2e-3 * ext and np.abs(bhi - hi).max() < 2e-3 * ext
        p = _render_psnr(gs, back)
        assert p >= RENDER_FLOOR[fmt], (name, fmt, p)
        if fmt != "ply":
            assert nbytes < 0.5 * len(gs) * 4 * (14 + 3 * gs.sh.shape[1]), (name, fmt, nbytes)


# -- field accuracy on small scenes, every SH degree ----------------------------------------------

def _aligned(fmt: str, gs: GaussianSet) -> GaussianSet:
    """The source in the order the format stores it (SOG and compressed PLY sort spatially)."""
    return gs.subset(spatial_order(gs.means.astype(np.float64))) if fmt in ("sog", "compressed-ply") else gs


def _quat_err(a, b):
    return float(np.abs(np.abs((normalize_quats(a) * normalize_quats(b)).sum(1)) - 1).max())


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("fmt", SCENE_FORMATS)
def test_fields_round_trip_every_sh_degree(fmt, degree, tmp_path):
    gs = make_tiny_scene(n=700, seed=degree, sh_degree=degree, features=2)
    gs.sh[:, 1:] = np.clip(gs.sh[:, 1:], -0.9, 0.9)
    gs.opacities[:] = np.clip(gs.opacities, -5, 5)
    out = tmp_path / f"s{FORMATS[fmt].suffix}"
    if fmt == "sog":  # one palette entry per Gaussian: only the 256-value codebook quantises SH
        from sundae_compress.io.sog import write_sog

        write_sog(gs, out, sh_palette=len(gs))
    else:
        write_scene(gs, out)
    back = read_scene(out)
    src = _aligned(fmt, gs)
    assert len(back) == len(gs) and back.sh_degree == degree and back.features is None
    ext = 2.0
    tol = {"ply": (0, 0, 0, 0, 0), "spz": (2.0 ** -17, 0.04, 0.035, 0.01, 0.07),
           "compressed-ply": (ext / 1023, 0.03, 0.01, 0.01, 0.0315),
           "sog": (1e-3, 0.25, 0.03, 0.05, 0.1)}[fmt]  # means, log-scales, quats, alpha, SH rest
    # SOG: 256 log-scale values for the whole scene; k-means leaves wide bins in the tails
    assert np.abs(back.means - src.means).max() <= tol[0] + 1e-6
    assert np.abs(back.scales - src.scales).max() <= tol[1] + 1e-6
    if fmt == "sog":
        assert np.abs(back.scales - src.scales).mean() <= 0.01
    assert _quat_err(back.quats, src.quats) <= tol[2] + 1e-6
    assert np.abs(back.alphas - src.alphas).max() <= tol[3] + 1e-3
    if degree:
        assert np.abs(back.sh[:, 1:] - src.sh[:, 1:]).max() <= tol[4] + 1e-6
    dc_err = np.abs(back.colors - src.colors).max()
    assert dc_err <= (0 if fmt == "ply" else 0.02) + 1e-6, dc_err


def test_spz_versions_and_axes(tmp_path):
    """v2 (first-three quaternions) and v3 read back; the stored file uses RUB axes (y, z flipped)."""
    import gzip

    from sundae_compress.io.spz import read_spz, write_spz

    gs = make_tiny_scene(n=300, seed=5, sh_degree=1)
    for v in (2, 3):
        write_spz(gs, tmp_path / f"v{v}.spz", version=v)
        back = read_spz(tmp_path / f"v{v}.spz")
        assert back.meta["format"] == f"spz v{v}"
        assert _quat_err(back.quats, gs.quats) < (0.02 if v == 2 else 0.002)
    raw = gzip.decompress((tmp_path / "v3.spz").read_bytes())
    assert raw[:4] == b"NGSP" and int.from_bytes(raw[4:8], "little") == 3
    fb = raw[13]
    first = np.frombuffer(raw[16:25], np.uint8).reshape(3, 3)
    xyz = [int.from_bytes(bytes(c) + (b"\xff" if c[2] & 0x80 else b"\x00"), "little", signed=True) for c in first]
    assert np.allclose(np.array(xyz) / 2 ** fb, gs.means[0] * [1, -1, -1], atol=2 ** -fb)
    with pytest.raises(SundaeError, match="version 5"):
        write_spz(gs, tmp_path / "v5.spz", version=5)


# -- errors and atomic writes --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["spz", "sog", "compressed-ply"])
def test_corrupt_and_truncated_files_are_one_line_errors(fmt, tmp_path):
    gs = make_tiny_scene(n=600, seed=1, sh_degree=2)
    good = tmp_path / f"good{FORMATS[fmt].suffix}"
    write_scene(gs, good)
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00junk" * 50,
             "flipped": data[:40] + bytes(b ^ 0x5A for b in data[40:80]) + data[80:]}
    for what, blob in cases.items():
        bad = tmp_path / f"{what}{FORMATS[fmt].suffix}"
        bad.write_bytes(blob)
        try:
            back = read_scene(bad)
        except SundaeError as e:
            assert "\n" not in str(e) and str(bad) in str(e), (what, e)
            continue
        # a flip inside the payload may still decode: then the count must be intact
        assert what == "flipped" and len(back) == len(gs), what


def test_atomic_write_keeps_existing_file_on_failure(tmp_path):
    target = tmp_path / "scene.spz"
    target.write_bytes(b"precious")

    with pytest.raises(SundaeError, match="No space left"):
        with atomic_write(target) as f:
            f.write(b"half")
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.spz"]
    with pytest.raises(SundaeError, match="does not exist"):
        write_scene(make_tiny_scene(n=10), tmp_path / "missing" / "x.spz")


def test_resolve_format():
    assert format_of_path("a/b.compressed.ply") == "compressed-ply"
    assert format_of_path("B.PLY") == "ply" and format_of_path("x.SOG") == "sog"
    assert resolve_format("x.spz") == "spz" and resolve_format(None) == "sundae"
    assert resolve_format("x.out", "sog") == "sog"
    with pytest.raises(SundaeError, match="extension"):
        resolve_format("x.ply", "spz")
    with pytest.raises(SundaeError, match="cannot tell"):
        resolve_format("x.bin")
    with pytest.raises(SundaeError, match="unknown format"):
        resolve_format("x.spz", "gltf")


# -- CLI, API decisions, batch -------------------------------------------------------------------

def _cli(command, *args):
    """Run a click command in-process (as the console script does); returns (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    r = CliRunner().invoke(command, [str(a) for a in args], env={"SUNDAE_QUIET": "1"})
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.slow
def test_cli_compress_and_decompress_to_formats(assets, tmp_path):
    from sundae_compress.cli import compress_main, decompress_main

    src = assets / "donut.ply"
    out = tmp_path / "d.spz"
    code, _, err = _cli(compress_main, src, "--ratio", "0.1", "--no-finetune", "-o", out)
    assert code == 0, err
    assert len(read_scene(out)) == round(0.1 * len(read_ply(src)))
    before = out.read_bytes()
    code, _, err = _cli(compress_main, src, "--ratio", "0.2", "--no-finetune", "-o", out)
    assert code == 1 and err.startswith("error: ") and "already exists" in err
    assert out.read_bytes() == before  # never overwritten without --overwrite
    code, _, err = _cli(compress_main, src, "--no-finetune", "-o", tmp_path / "d.ply", "--format", "sog")
    assert code == 1 and err.count("\n") == 1 and "--format is 'sog'" in err
    code, _, err = _cli(compress_main, src, "--no-finetune", "-o", src, "--overwrite")
    assert code == 1 and "is the input scene" in err  # the source is sacred, --overwrite or not

    # a bundle with a compensation net: decompress says in one line that the net stays behind
    from sundae_compress.io.bundle import write_bundle

    gs = read_scene(out)
    bundle = tmp_path / "n.sundae"
    net = b"\x08\x07onnx-bytes" * 300  # decompress never runs the net (an ONNX export takes ~50 s here)
    write_bundle(bundle, gs, net=net, net_meta={"arch": "unet", "num_features": 0})
    from sundae_compress.progress import set_quiet

    set_quiet(False)  # notices are on (another test in this process may have silenced them)
    for args, made, suffix in ((["-o", tmp_path / "n.sog"], "n.sog", ".sog"),
                               (["--format", "compressed-ply"], "n.decoded.compressed.ply", ".compressed.ply")):
        code, outp, err = _cli(decompress_main, bundle, *args)
        assert code == 0, err
        notes = [ln for ln in err.splitlines() if "compensation net" in ln]
        assert len(notes) == 1 and f"cannot travel in {suffix}" in notes[0], err
        assert len(read_scene(tmp_path / made)) == len(gs)
    code, _, err = _cli(decompress_main, out, "-o", tmp_path / "q.sog")  # an .spz is not a bundle
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_api_skips_the_net_for_formats_without_one(assets, tmp_path):
    """The decision lives in api.compress: fine-tune the Gaussians, train no net, say so once."""
    import sundae_compress as sc

    rep = sc.compress(assets / "donut.ply", tmp_path / "d.compressed.ply", ratio=0.05,
                      finetune_options={"iterations": 3, "resolution": 48, "polish_iterations": 0})
    assert rep.format == "compressed-ply" and rep.finetune["net"] is False
    assert len(rep.notes) == 1 and "cannot travel in .compressed.ply" in rep.notes[0]
    assert len(read_scene(tmp_path / "d.compressed.ply")) == rep.kept_count
    with pytest.raises(SundaeError, match="--features needs the compensation net"):
        sc.compress(assets / "donut.ply", tmp_path / "e.spz", ratio=0.05, finetune_options={"features": 2})


@pytest.mark.slow
def test_batch_format_and_resume(assets, tmp_path):
    from sundae_compress.batch import run_batch

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    os.symlink(assets / "donut.ply", src / "sub" / "donut.ply")
    out = tmp_path / "out"
    res = run_batch(src, out, ratio=0.05, finetune=False, format="spz", as_json=True)
    assert res.ok and [r.status for r in res.results] == ["ok"]
    spz = out / "sub" / "donut.spz"
    assert len(read_scene(spz)) == res.results[0].gaussians_kept
    res = run_batch(src, out, ratio=0.05, finetune=False, format="spz", as_json=True)
    assert [r.status for r in res.results] == ["skipped"]
    assert not list(out.rglob("*.sundae"))


# -- reference decoder: PlayCanvas splat-transform ------------------------------------------------

ST_PACKAGE = "@playcanvas/splat-transform"


@pytest.fixture(scope="session")
def splat_transform():
    """Path of the splat-transform CLI, installed from the npm registry into
    ``~/.cache/sundae-compress/npm`` on first use; skips when node/npm or the registry is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node/npm not installed: cannot cross-check against splat-transform")
    cache = Path(os.environ.get("SUNDAE_NPM_CACHE", Path.home() / ".cache" / "sundae-compress" / "npm"))
    cli = cache / "node_modules" / ".bin" / "splat-transform"
    if not cli.exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), ST_PACKAGE],
                               capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of splat-transform timed out (no registry access?)")
        if r.returncode != 0 or not cli.exists():
            pytest.skip(f"npm install of {ST_PACKAGE} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return cli


def _load_reference_ply(path) -> GaussianSet:
    """A float PLY written by splat-transform, keeping every row (it writes ±inf opacity for
    alpha 0 / 255, which our reader would drop): exact counts, opacity clamped."""
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"].data
    col = lambda k: np.asarray(v[k], np.float64)  # noqa: E731
    rest = sorted((n for n in v.dtype.names if n.startswith("f_rest_")), key=lambda s: int(s[7:]))
    n, k = len(v), len(rest) // 3
    sh = np.zeros((n, k + 1, 3))
    sh[:, 0] = np.stack([col(f"f_dc_{i}") for i in range(3)], 1)
    if k:
        sh[:, 1:] = np.stack([col(r) for r in rest], 1).reshape(n, 3, k).transpose(0, 2, 1)
    return GaussianSet(means=np.stack([col("x"), col("y"), col("z")], 1),
                       quats=normalize_quats(np.stack([col(f"rot_{i}") for i in range(4)], 1).astype(np.float32)),
                       scales=np.stack([col(f"scale_{i}") for i in range(3)], 1),
                       opacities=np.clip(col("opacity"), -9.3, 9.3), sh=sh)


@pytest.mark.slow
def test_splat_transform_decodes_ours(assets, splat_transform, tmp_path):
    """Our spz / SOG / compressed.ply files, converted to PLY by the reference tool, match our own
    decode: exact counts and renders ≥ 50 dB (donut at 10 %, plus a playbot slice for SH)."""
    from sundae_compress.api import prune_scene

    donut = prune_scene(read_ply(assets / "donut.ply"), ratio=0.1)
    playbot = _subset(read_ply(assets / "playbot_125k.ply"), 0.04, seed=1)
    for name, gs in (("donut", donut), ("playbot", playbot)):
        for fmt in ("spz", "sog", "compressed-ply"):
            ours = tmp_path / f"{name}{FORMATS[fmt].suffix}"
            write_scene(gs, ours)
            ref_ply = tmp_path / f"{name}.{fmt}.ref.ply"
            r = subprocess.run([str(splat_transform), "-w", "-q", str(ours), str(ref_ply)], capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-1000:]
            mine, ref = read_scene(ours), _load_reference_ply(ref_ply)
            assert len(ref) == len(mine) == len(gs), (name, fmt)
            assert ref.sh_degree == mine.sh_degree == gs.sh_degree
            p = _render_psnr(mine, ref)
            assert p >= 50.0, (name, fmt, p)
