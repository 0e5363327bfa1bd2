"""Follow-ups of a new-user walkthrough of the last release: eval warns when the scene is not the
bundle's source, render counts its files truly, --quality is a choice, the side-by-side says which
views its rows are, the compress summary says what it measured (or that it did not), and every
printed PSNR names its view set."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_scene
from test_ux import one_line_error
from sundae_compress import api
from sundae_compress.io.bundle import read_bundle
from sundae_compress.io.ply import write_ply

BIN = Path(sys.executable).parent


def run(tool, *args, cwd=None):
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ), timeout=300)


def in_process(tool, *args, capsys, stderr=False):
    """Run a successful command in this process (no second torch import): its stdout (and stderr).
    Restores quietness. Error lines and exit codes are checked with :func:`run`."""
    from sundae_compress import cli
    from sundae_compress.progress import is_quiet, set_quiet

    main = {"sundae-eval": cli.eval_main, "sundae-inspect": cli.inspect_main, "sundae-compress": cli.compress_main,
            "sundae-render": cli.render_main}[tool]
    quiet = is_quiet()
    capsys.readouterr()
    try:
        main.main([str(a) for a in args], prog_name=tool, standalone_mode=False)
    finally:
        set_quiet(quiet)
    out = capsys.readouterr()
    return (out.out, out.err) if stderr else out.out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two unrelated tiny scenes A.ply (1200 Gaussians) and B.ply (900), and A.sundae made from A."""
    d = tmp_path_factory.mktemp("walk")
    write_ply(make_tiny_scene(n=1200, seed=5), d / "A.ply")
    write_ply(make_tiny_scene(n=900, seed=6), d / "B.ply")
    api.compress(d / "A.ply", d / "A.sundae", ratio=0.25, finetune=False)
    return d


# 3 -- --quality is a choice: listed in --help, any case, a bad value is one error line -------------
def test_quality_is_a_choice(scenes, tmp_path, capsys):
    assert "--quality [max|high|medium|low]" in in_process("sundae-compress", "--help", capsys=capsys)
    in_process("sundae-compress", scenes / "A.ply", "--no-finetune", "--quality", "HIGH", "-o", tmp_path / "h.sundae",
               capsys=capsys)
    assert read_bundle(tmp_path / "h.sundae").header["pipeline"]["quality"] == "high"
    one_line_error(run("sundae-compress", scenes / "A.ply", "--no-finetune", "--quality", "best",
                       "-o", tmp_path / "b.sundae"), "'--quality'", "'best' is not one of", "--help")
    assert not (tmp_path / "b.sundae").exists()


# 2 -- render counts what it wrote: N views + the contact sheet ------------------------------------
def test_render_counts_views_and_contact_sheet(scenes, tmp_path, capsys):
    out = in_process("sundae-render", scenes / "A.sundae", "-o", tmp_path / "r", "--views", "4", "--size", "32x24",
                     capsys=capsys)
    written = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert len(written) == 5 and "contact_sheet.png" in written
    assert out.strip().endswith(f"A.sundae: 4 views → {tmp_path / 'r'}: 4 PNGs + contact_sheet.png (5 files)")


# 1 -- eval warns when the scene is not the one the bundle was made from --------------------------
EVAL_FAST = ("--cameras", "orbit", "--views", "1", "--size", "32x24")


def _warnings(r):
    return [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]


def test_eval_warns_about_another_scene(scenes, tmp_path, capsys):
    out, err = in_process("sundae-eval", scenes / "A.ply", scenes / "A.sundae", *EVAL_FAST, "--json", capsys=capsys,
                          stderr=True)
    assert "warning" not in err and json.loads(out)["warnings"] == []
    r = run("sundae-eval", scenes / "B.ply", scenes / "A.sundae", *EVAL_FAST)
    assert r.returncode == 0 and "novel: PSNR" in r.stdout, r.stderr  # still evaluated
    assert _warnings(r) == ["warning: A.sundae was made from A.ply (1,200 Gaussians, "
                            f"{(scenes / 'A.ply').stat().st_size:,} bytes); B.ply has 900 Gaussians, "
                            f"{(scenes / 'B.ply').stat().st_size:,} bytes: B.ply is clearly another scene, "
                            "so these PSNRs compare different scenes (evaluating anyway)"], r.stderr


def test_source_warning_cases(scenes, tmp_path):
    from sundae_compress.io.ply import read_ply

    def warning(scene):
        return api.source_warning(scene, read_ply(scene), scenes / "A.sundae")

    assert warning(scenes / "A.ply") is None
    (tmp_path / "renamed.ply").write_bytes((scenes / "A.ply").read_bytes())  # a copy is the same scene
    assert warning(tmp_path / "renamed.ply") is None
    write_ply(make_tiny_scene(n=1150, seed=5), tmp_path / "A.ply")  # same name, 4 % fewer Gaussians
    assert "A.ply has 1,150 Gaussians" in warning(tmp_path / "A.ply")
    assert "A.ply may not be that scene" in warning(tmp_path / "A.ply")
    assert api.source_warning(scenes / "A.ply", read_ply(scenes / "A.ply"), scenes / "B.ply") is None  # no record


# 4 -- the side-by-side says which views its rows are ---------------------------------------------
def test_side_by_side_rows_are_explained(scenes, tmp_path, capsys):
    from sundae_compress.io.images import read_image

    out = tmp_path / "side.png"
    text = in_process("sundae-eval", scenes / "A.ply", scenes / "A.sundae", *EVAL_FAST, "-o", out, capsys=capsys)
    assert f"side-by-side: {out}, 4 rows = the 4 worst of the 12 novel views, worst first " \
           "(--views sets only the near views)" in text
    row = 14 + (2 + 24 + 2)  # caption strip over one original | candidate | error row of 32x24 images
    assert read_image(out).shape[:2] == (2 + 4 * (row + 2), 2 + (2 + 3 * (32 + 2)) + 2)
    from sundae_compress.io.ply import read_ply

    gs = read_ply(scenes / "A.ply")
    near, novel, _ = api.evaluation_views(gs, scenes / "A.ply", cameras="orbit", views=1, size=(32, 24))
    res = api.evaluate_output(gs, scenes / "A.sundae", near, novel, side_by_side_path=tmp_path / "api.png")
    assert [x["psnr"] for x in res["side_by_side_rows"]] == sorted(v["psnr"] for v in res["novel"]["views"])[:4]
    assert {x["set"] for x in res["side_by_side_rows"]} == {"novel"} and res["near"]["n_views"] == 1


# 7 -- every printed PSNR names its views ----------------------------------------------------------
def _cameras_json(path: Path, n: int = 16, w: int = 64, h: int = 48) -> Path:
    """An INRIA cameras.json of ``n`` views on a circle of radius 4 looking at the origin."""
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n
        pos = np.array([4 * np.cos(a), 0.0, 4 * np.sin(a)])
        z = -pos / np.linalg.norm(pos)
        x = np.cross([0.0, -1.0, 0.0], z)
        x /= np.linalg.norm(x)
        cams.append({"id": i, "img_name": f"v{i:02d}", "width": w, "height": h, "fx": 60.0, "fy": 60.0,
                     "position": pos.tolist(), "rotation": np.stack([x, np.cross(z, x), z], 1).tolist()})
    path.write_text(json.dumps(cams))
    return path


def test_every_psnr_names_its_views(scenes, tmp_path, capsys):
    (tmp_path / "C.ply").write_bytes((scenes / "A.ply").read_bytes())
    _cameras_json(tmp_path / "cameras.json")  # 16 views: every 8th (2) held out
    r = run("sundae-compress", tmp_path / "C.ply", "--ratio", "0.25", "--iterations", "5", "--resolution", "48")
    assert r.returncode == 0, r.stderr
    assert re.search(r"fine-tuned 300 Gaussians: trainer check views \(4 training-distribution draws, 256x192\) "
                     r"PSNR [0-9.]+ -> [0-9.]+ dB", r.stderr), r.stderr
    m = re.search(r"; novel views \(12, 480x360\) ([0-9.]+) dB PSNR \(worst ([0-9.]+)\), "
                  r"camera-file views \(2 held out, 64x48\) ([0-9.]+) dB$", r.stdout.strip())
    assert m, r.stdout
    assert "near" not in r.stdout + r.stderr
    out = in_process("sundae-inspect", tmp_path / "C.sundae", capsys=capsys)
    assert "fine-tuned 5 iterations" in out and "trainer check views (4 training-distribution draws, " \
           "256x192) PSNR" in out, out
    d = json.loads(in_process("sundae-eval", tmp_path / "C.ply", tmp_path / "C.sundae", "--json", capsys=capsys))
    assert d["near"]["label"] == "camera-file views (2 held out, 64x48)" and d["novel"]["label"] == "novel views (12, 480x360)"
    assert d["novel"]["psnr"] == pytest.approx(float(m.group(1)), abs=0.006)
    assert d["near"]["psnr"] == pytest.approx(float(m.group(3)), abs=0.006)
    out = in_process("sundae-eval", tmp_path / "C.ply", tmp_path / "C.sundae", "--cameras", "orbit", "--views", "2",
                     "--size", "40x30", capsys=capsys)
    assert " near: PSNR " in out and " on orbit views (2 generated, 40x30); worst " in out, out
    assert "novel: PSNR " in out and " on novel views (12, 40x30); worst " in out, out


# 5 -- --no-finetune says the novel-view PSNR was not measured, and --eval measures it ---------------
def test_no_finetune_summary_says_what_it_measured(scenes, tmp_path, capsys):
    out = in_process("sundae-compress", scenes / "A.ply", "--no-finetune", "-o", tmp_path / "a.sundae", "--quiet",
                     capsys=capsys).strip()
    assert out.endswith(" s; novel-view PSNR not measured (--no-finetune skips it: add --eval, or run sundae-eval)"), out
    out = in_process("sundae-compress", scenes / "A.ply", "--no-finetune", "--eval", "-o", tmp_path / "b.sundae",
                     "--quiet", "--ratio", "0.25", capsys=capsys).strip()
    # (test_cli checks that these figures are sundae-eval's)
    assert re.search(r" s; novel views \(12, 480x360\) [0-9.]+ dB PSNR \(worst [0-9.]+\), "
                     r"orbit views \(8 generated, 320x240\) [0-9.]+ dB$", out), out


# 6 -- the Makefile takes PyTorch's CPU index when asked, and pip's configured index otherwise --------
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_torch_index(tmp_path):
    root = Path(__file__).resolve().parents[1]
    url = "https://download.pytorch.org/whl/cpu"

    def torch_line(*extra):
        r = subprocess.run(["make", "-n", "-B", f"VENV={tmp_path / 'v'}", f"{tmp_path / 'v'}/.base", *extra],
                           cwd=root, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return next(ln for ln in r.stdout.splitlines() if "torch==" in ln)

    assert "--index-url" not in torch_line()  # here: pip's configured index, unchanged
    assert f"torch==2.13.0 --index-url {url} " in torch_line(f"TORCH_INDEX={url}")
    readme = (root / "README.md").read_text()
    assert f"make demo TORCH_INDEX={url}" in readme and f"--index-url {url}" in readme


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_takes_compress_flags(tmp_path):
    root = Path(__file__).resolve().parents[1]

    def compress_line(*extra):
        r = subprocess.run(["make", "-n", f"VENV={tmp_path / 'v'}", "demo", *extra], cwd=root, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return next(ln for ln in r.stdout.splitlines() if "sundae-compress " in ln).strip()

    assert compress_line().endswith("-o examples/out/scene.sundae --overwrite")
    assert compress_line("DEMO_FLAGS=--iterations 20").endswith("--overwrite --iterations 20")
    assert 'make demo DEMO_FLAGS="--iterations 20"' in (root / "README.md").read_text()
