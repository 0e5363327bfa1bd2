"""What a newcomer meets (issue 13): the source scene is never replaced, every command says which
cameras it used, outputs get normal permissions, parse errors are one line, batches report honestly
when interrupted, eval writes only what it is asked to, set-up and inspect are quiet and quick."""

from __future__ import annotations

import ast
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_scene
from sundae_compress import api
from sundae_compress.errors import SundaeError
from sundae_compress.io.ply import read_ply, write_ply

BIN = Path(sys.executable).parent
PKG = Path(__file__).resolve().parents[1] / "sundae_compress"
KEPT = round(0.2 * (1500 - 7))  # the tiny scene below at ratio 0.2 of its valid rows


def run(tool, *args, env=None, cwd=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=300)


def one_line_error(r, *fragments):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def _cameras_json(path: Path, n: int = 16, w: int = 64, h: int = 48, centre=(0.0, 0.0, 0.0)) -> Path:
    """An INRIA cameras.json of ``n`` views on a circle of radius 4 looking at ``centre``."""
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n
        rel = np.array([4 * np.cos(a), 0.0, 4 * np.sin(a)])
        pos = np.asarray(centre, np.float64) + rel
        z = -rel / np.linalg.norm(rel)
        x = np.cross([0.0, -1.0, 0.0], z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        cams.append({"id": i, "img_name": f"v{i:02d}", "width": w, "height": h, "fx": 60.0, "fy": 60.0,
                     "position": pos.tolist(), "rotation": np.stack([x, y, z], 1).tolist()})
    path.write_text(json.dumps(cams))
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A tiny scene ``X.ply`` (with the standard nx, ny, nz and 7 NaN rows), its ``X.sundae``, and
    a cameras.json next to them."""
    d = tmp_path_factory.mktemp("ux")
    gs = make_tiny_scene(n=1500, seed=3)
    gs.means[:7, 0] = np.nan
    write_ply(gs, d / "X.ply")
    _cameras_json(d / "cameras.json")
    api.compress(d / "X.ply", d / "X.sundae", ratio=0.2, finetune=False)
    return d


# 1 -- decompress never replaces the source scene ---------------------------------------------
def test_decompress_default_name_and_source_guard(scene):
    src = scene / "X.ply"
    before = src.read_bytes()
    r = run("sundae-decompress", scene / "X.sundae")
    assert r.returncode == 0, r.stderr
    assert len(read_ply(scene / "X.decoded.ply")) == KEPT and src.read_bytes() == before
    r = run("sundae-decompress", scene / "X.sundae", "-o", src, "--overwrite")
    one_line_error(r, "source scene", "--overwrite-source")
    assert src.read_bytes() == before
    # a copy under another name is recognised by its recorded size
    (scene / "copy.ply").write_bytes(before)
    one_line_error(run("sundae-decompress", scene / "X.sundae", "-o", scene / "copy.ply", "--overwrite"),
                   "source scene")
    r = run("sundae-decompress", scene / "X.sundae", "-o", scene / "copy.ply", "--overwrite-source")
    assert r.returncode == 0 and len(read_ply(scene / "copy.ply")) == KEPT


def test_compress_never_writes_over_its_input(scene, tmp_path):
    p = tmp_path / "s.ply"
    p.write_bytes((scene / "X.ply").read_bytes())
    with pytest.raises(SundaeError, match="input scene itself"):
        api.compress(p, p, ratio=0.5, finetune=False, overwrite=True)
    assert p.read_bytes() == (scene / "X.ply").read_bytes()


# 2 -- every command says which cameras it used -----------------------------------------------
def test_render_and_eval_say_which_cameras(scene, tmp_path):
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "X.sundae").write_bytes((scene / "X.sundae").read_bytes())
    r = run("sundae-render", tmp_path / "alone" / "X.sundae", "-o", tmp_path / "r", "--views", "3")
    assert r.returncode == 0, r.stderr
    cam_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("cameras:")]
    assert len(cam_lines) == 1 and "generated" in cam_lines[0] and "no cameras.json" in cam_lines[0]
    r = run("sundae-render", scene / "X.ply", "-o", tmp_path / "r2", "--views", "3")
    cam_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("cameras:")]
    assert r.returncode == 0 and len(cam_lines) == 1, r.stderr
    assert cam_lines[0].startswith(f"cameras: the first 3 of 16 views in {scene / 'cameras.json'} at 64x48 (found next")
    assert len(list((tmp_path / "r2").glob("0*.png"))) == 3
    r = run("sundae-eval", scene / "X.ply", scene / "X.sundae", "--cameras", "orbit", "--views", "2",
            "--size", "40x30", cwd=tmp_path)
    cam_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("cameras:")]
    assert r.returncode == 0 and cam_lines == ["cameras: 2 generated orbit views at 40x30 (--cameras orbit)"], r.stderr
    # 8 -- eval writes no image unless asked, 9 -- and no "LPIPS unavailable" line
    assert "LPIPS" not in r.stdout and "side-by-side" not in r.stdout
    assert not list(scene.glob("*.png")) and not list(tmp_path.glob("*.png"))


def test_eval_held_out_views_of_a_found_camera_file(scene):
    gs = read_ply(scene / "X.ply")
    v = api.choose_views(gs, scene / "X.ply", held_out=True)
    assert len(v.cameras) == 2 and "2 held-out (every 8th) of the 16 views" in v.source
    t = api.training_views(scene / "X.ply")
    assert len(t.cameras) == 16 and t.source.startswith("cameras: 16 views in ")
    t = api.training_views(scene / "X.ply", cameras="orbit")
    assert t.cameras is None and "generated" in t.source


def test_evaluation_views_read_the_camera_file_once(scene, monkeypatch):
    """evaluation_views reads a camera file (found next to the scene, or --cameras) once and takes
    both the held-out near views and the novel views' frame from that one list."""
    from sundae_compress.render import cameras as cam_mod
    from sundae_compress.render.cameras import ViewFrame, novel_views

    gs = read_ply(scene / "X.ply")
    load = cam_mod.load_cameras
    real = load(scene / "cameras.json")
    reads = []

    def counting(path):
        reads.append(Path(path).name)
        return load(path)

    monkeypatch.setattr(cam_mod, "load_cameras", counting)
    for cameras in (None, scene / "cameras.json"):
        reads.clear()
        near, novel, line = api.evaluation_views(gs, scene / "X.ply", cameras=cameras)
        assert reads == ["cameras.json"], (cameras, reads)
        assert [c.name for c in near] == [real[i].name for i in (0, 8)] and "2 held-out" in line
        want = novel_views(ViewFrame.of(gs, cameras=real))
        assert [c.name for c in novel] == [c.name for c in want]
        np.testing.assert_allclose([c.position for c in novel], [c.position for c in want])
    reads.clear()
    api.evaluation_views(gs, scene / "X.ply", cameras="orbit")
    assert reads == []


def test_eval_cameras_from_another_capture_do_not_move_the_novel_views(scene, tmp_path):
    """sundae-eval --cameras OTHER.json: OTHER's views are the near set, but the novel views stay
    defined by the scene (its own cameras.json next to it, else its content), even when OTHER's
    cameras surround a point far from the scene. compress, which trains on its --cameras, keeps
    evaluating around the frame of the cameras it trained on."""
    from sundae_compress.render.cameras import ViewFrame, camera_frame, load_cameras, novel_views

    gs = read_ply(scene / "X.ply")
    other = _cameras_json(tmp_path / "OTHER.json", n=8, w=40, h=30, centre=(30.0, 5.0, -20.0))
    far = camera_frame(load_cameras(other))
    assert far is not None and np.allclose(far.centre, (30, 5, -20), atol=1e-6)  # it would move them
    own = novel_views(ViewFrame.of(gs, cameras=load_cameras(scene / "cameras.json")))
    assert np.linalg.norm([c.position for c in own], axis=1).max() < 10  # around the scene (OTHER: 36 away)

    def positions(cams):
        return np.array([c.position for c in cams])

    for cameras in (other, "orbit", None, scene / "cameras.json"):
        near, novel, _ = api.evaluation_views(gs, scene / "X.ply", cameras=cameras, scene_frame=True)
        assert [c.name for c in novel] == [c.name for c in own], cameras
        np.testing.assert_allclose(positions(novel), positions(own), err_msg=str(cameras))
    near, _, line = api.evaluation_views(gs, scene / "X.ply", cameras=other, scene_frame=True)
    assert [c.name for c in near] == ["v00"] and "OTHER.json" in line  # held-out view 0 of 8
    # a scene with no camera file next to it: the content frame, whatever --cameras says
    (tmp_path / "alone").mkdir()
    write_ply(gs, tmp_path / "alone" / "Y.ply")
    _, novel, _ = api.evaluation_views(gs, tmp_path / "alone" / "Y.ply", cameras=other, scene_frame=True)
    np.testing.assert_allclose(positions(novel), positions(novel_views(ViewFrame.of(gs))))
    # --cameras orbit past an unreadable camera file next to the scene (no compress trained on it)
    (tmp_path / "alone" / "cameras.json").write_text("{}")
    _, novel, _ = api.evaluation_views(gs, tmp_path / "alone" / "Y.ply", cameras="orbit", scene_frame=True)
    np.testing.assert_allclose(positions(novel), positions(novel_views(ViewFrame.of(gs))))
    # compress (scene_frame=False, the default): the frame of the cameras it trained on
    _, novel, _ = api.evaluation_views(gs, scene / "X.ply", cameras=other)
    np.testing.assert_allclose(positions(novel), positions(novel_views(far)))

    # the command: the same novel views, so the same novel figures, as without --cameras
    r = run("sundae-eval", scene / "X.ply", scene / "X.sundae", "--cameras", other, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want = api.evaluate_output(gs, scene / "X.sundae", *api.evaluation_views(gs, scene / "X.ply")[:2])
    assert [v["name"] for v in got["near"]["views"]] == ["v00"]
    assert [v["name"] for v in got["novel"]["views"]] == [v["name"] for v in want["novel"]["views"]]
    assert got["novel"]["psnr"] == pytest.approx(want["novel"]["psnr"], abs=1e-6)


def test_training_photos_are_keyed_by_camera_name(tmp_path):
    """--images: photos are loaded once, in api.py, into what fine-tuning looks them up by."""
    from sundae_compress.io.images import save_png

    cams = _cameras_json(tmp_path / "cams.json", n=3)
    for i in range(3):
        save_png(tmp_path / "photos" / f"v{i:02d}.png", np.full((48, 64, 3), i / 4))
    t = api.training_views(tmp_path / "s.ply", cameras=cams, images=tmp_path / "photos")
    assert sorted(t.images) == ["v00", "v01", "v02"] and t.images["v02"].shape == (48, 64, 3)
    assert abs(float(t.images["v02"].mean()) - 0.5) < 0.01 and "photos from" in t.source
    with pytest.raises(SundaeError, match="--images needs --cameras"):
        api.training_views(tmp_path / "s.ply", images=tmp_path / "photos")


# 3 -- a bundle given to compress ---------------------------------------------------------------
def test_compress_a_bundle_says_so(scene):
    one_line_error(run("sundae-compress", scene / "X.sundae", "--no-finetune"), "is a .sundae bundle, not a PLY")


# 4 -- outputs get the user's permissions, still atomically -------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(scene, tmp_path, umask):
    from sundae_compress.io.images import save_png

    old = os.umask(umask)
    try:
        api.compress(scene / "X.ply", tmp_path / "a.sundae", ratio=0.5, finetune=False)
        api.decompress(tmp_path / "a.sundae", tmp_path / "a.ply")
        save_png(tmp_path / "a.png", np.zeros((4, 4, 3)))
    finally:
        os.umask(old)
    for name in ("a.sundae", "a.ply", "a.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply", "a.png", "a.sundae"]  # no temporaries


# 5 -- click's errors follow the convention; --version --------------------------------------------
def test_parse_errors_are_one_line_and_version(scene):
    one_line_error(run("sundae-compress", scene / "X.ply", "--ratio", "abc"), "'--ratio'", "--help")
    one_line_error(run("sundae-render", scene / "X.ply", "-o", "r", "--views", "0"), "'--views'")
    one_line_error(run("sundae-inspect"), "missing argument")
    one_line_error(run("sundae-eval", "a", "b", "--bogus"), "--bogus")
    r = run("sundae-inspect", "--version")
    assert r.returncode == 0 and r.stdout.strip() == "sundae-inspect 0.1.0"


# 6 -- render checks -o before rendering ----------------------------------------------------------
def test_render_output_must_be_a_folder(scene, tmp_path):
    target = tmp_path / "g.ply"
    target.write_bytes(b"precious")
    one_line_error(run("sundae-render", scene / "X.sundae", "-o", target), "-o takes a folder")
    one_line_error(run("sundae-render", scene / "X.sundae", "-o", tmp_path / "new.ply"), "-o takes a folder")
    assert target.read_bytes() == b"precious" and not (tmp_path / "new.ply").exists()
    if Path("/proc/self").is_dir():  # a folder nobody can create: refused once loaded, before rendering
        r = run("sundae-render", scene / "X.sundae", "-o", "/proc/sundae-render-test", "--views", "1")
        one_line_error(r, "cannot create")
        assert "rendering" not in r.stderr
    one_line_error(run("sundae-render", tmp_path / "missing.ply", "-o", tmp_path / "r"), "no such file")
    assert not (tmp_path / "r").exists()  # nothing created for a command that failed


# 7 -- batches: honest report when interrupted, no lock left, right counts for skipped rows ---------
def test_batch_interrupt_report_lock_and_skipped_counts(scene, tmp_path, monkeypatch, capsys):
    from sundae_compress import batch

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"s{i}.ply").write_bytes((scene / "X.ply").read_bytes())
    out = tmp_path / "out"
    real = batch._run_scene
    calls = []

    def stop_on_second(s, *a, **k):
        calls.append(s.name)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the batch turns SIGTERM into an interruption
            time.sleep(5)
        return real(s, *a, **k)

    monkeypatch.setattr(batch, "_run_scene", stop_on_second)
    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(src, out, ratio=0.5, finetune=False)
    rep = json.loads((out / "batch_report.json").read_text())
    assert rep["ok"] is False and rep["interrupted"] is True
    assert [s["scene"] for s in rep["scenes"]] == ["s0.ply"] and rep["unfinished"] == ["s1.ply", "s2.ply"]
    assert not (out / batch.LOCK_NAME).exists() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    monkeypatch.setattr(batch, "_run_scene", real)

    res = batch.run_batch(src, out, ratio=0.5, finetune=False)  # resumes: s0 skipped
    assert res.ok and not (out / batch.LOCK_NAME).exists()
    res = batch.run_batch(src, out, ratio=0.5, finetune=False)  # all skipped
    assert [r.status for r in res.results] == ["skipped"] * 3
    assert {r.gaussians_in for r in res.results} == {1500 - 7}  # the valid count, not the row count
    assert {r.gaussians_kept for r in res.results} == {round(0.5 * 1493)}
    capsys.readouterr()


# 9 -- quiet output -----------------------------------------------------------------------------------
def test_standard_normals_are_not_a_notice(scene, tmp_path):
    r = run("sundae-compress", scene / "X.ply", "--no-finetune", "-o", tmp_path / "q.sundae")
    assert r.returncode == 0, r.stderr
    assert "ignored properties" not in r.stderr and "dropped 7 rows" in r.stderr


def test_progress_prints_the_closing_line_once():
    import io

    from sundae_compress.progress import Progress

    buf = io.StringIO()
    with Progress(3, "work", stream=buf, log_every=0.0) as bar:
        for _ in range(3):
            bar.update()
    lines = buf.getvalue().splitlines()
    assert sum("100.0%" in ln for ln in lines) == 1, lines


def test_side_by_side_has_column_labels(tmp_path):
    from sundae_compress.evaluate import evaluate_view_sets
    from sundae_compress.io.images import read_image
    from sundae_compress.render import Camera

    gs = make_tiny_scene(n=200, seed=1)
    gs.means[:] = gs.means * 0.3 + [0, 0, 3]
    cams = [Camera(np.eye(4), 30.0, 30.0, 16.0, 12.0, 32, 24, "a")]
    evaluate_view_sets(gs, gs.subset(np.arange(100)), {"near": cams}, side_by_side_path=tmp_path / "s.png")
    img = read_image(tmp_path / "s.png")
    strip = img[:14]
    assert img.shape[0] == 14 + (2 + 24 + 2) + 2 * 2 and (strip < 128).any() and (strip[:, :, 0] > 200).mean() > 0.7
    for third in range(3):  # a caption over each column
        w = img.shape[1] // 3
        assert (strip[:, third * w:(third + 1) * w] < 128).any()


def test_options_have_help():
    out = {t: run(t, "--help").stdout for t in ("sundae-compress", "sundae-decompress", "sundae-eval")}
    assert "spectral band-stop" in out["sundae-compress"] and "Random seed" in out["sundae-compress"]
    assert "never the bundle's recorded source" in out["sundae-decompress"].replace("\n", " ").replace("  ", " ") \
        or "recorded source" in out["sundae-decompress"]
    assert "machine-readable" in out["sundae-eval"]


# 10 / 11 -- inspect: no torch, a readable table -----------------------------------------------------
def test_inspect_does_not_import_torch_and_reads_well(tmp_path):
    from sundae_compress.io.bundle import write_bundle

    p = tmp_path / "d0.sundae"
    write_bundle(p, make_tiny_scene(n=60, sh_degree=0),
                 info={"pipeline": {"ratio": 0.1, "count": 6, "method": None, "gamma": 0.5, "merge": "collapse",
                                    "finetune": None}})
    code = ("import sys; from sundae_compress.cli import inspect_main; "
            f"inspect_main.main([{str(p)!r}], standalone_mode=False); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    *table, torch_loaded = r.stdout.strip().splitlines()
    assert torch_loaded == "False"
    text = "\n".join(table)
    assert "SH rest" not in text and "None" not in text
    assert "kept 6 Gaussians (ratio 0.1); pairwise edge-collapse merge (no selector); no fine-tuning" in text


# issue 12 -- structure: no import cycles, only cli/batch print -------------------------------------
def _imports(path: Path, module: str):
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = ".".join(base[: len(base) - node.level + 1] + [node.module] if node.module else
                           base[: len(base) - node.level + 1]) if node.level else node.module
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


def test_no_import_cycles():
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: {t for t in _imports(f, m) if t in mods and t != m} for m, f in mods.items()}

    def reaches(a, b):
        seen, todo = set(), [a]
        while todo:
            for n in graph[todo.pop()]:
                if n == b:
                    return True
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return False

    cycles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, cycles


def test_only_cli_and_batch_print():
    allowed = {"cli.py", "batch.py", "progress.py"}  # progress.py: the progress/notice channel itself
    offenders = []
    for f in PKG.rglob("*.py"):
        if f.name in allowed and f.parent == PKG:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{f.relative_to(PKG)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "echo":
                offenders.append(f"{f.relative_to(PKG)}:{node.lineno}")
    assert not offenders, offenders
    # the orchestration layer decides and hands its notices to the caller; it prints nothing itself
    api_imports = set(_imports(PKG / "api.py", "sundae_compress.api"))
    assert not {m for m in api_imports if m.startswith("sundae_compress.progress")}, api_imports
