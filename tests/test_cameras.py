"""Camera loading (cameras.json, transforms.json), orbit generation that frames the shared
scenes, and the train/test split."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sundae_compress.api import find_cameras_for
from sundae_compress.errors import SundaeError
from sundae_compress.render import Camera
from sundae_compress.render.cameras import detect_up, generate_cameras, load_cameras, parse_up, split_views

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


def _rot_y(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def test_load_inria_cameras_json(tmp_path):
    # camera 0 at (0, 0, -5) looking along +z; camera 1 at (5, 0, 0) turned to look along -x
    R1 = _rot_y(-90)  # camera-to-world: its z column is (-1, 0, 0)
    data = [
        {"id": 0, "img_name": "a", "width": 64, "height": 48, "position": [0, 0, -5],
         "rotation": np.eye(3).tolist(), "fx": 50.0, "fy": 55.0},
        {"id": 1, "img_name": "b", "width": 64, "height": 48, "position": [5, 0, 0],
         "rotation": R1.tolist(), "fx": 50.0, "fy": 50.0},
    ]
    (tmp_path / "cameras.json").write_text(json.dumps(data))
    cams = load_cameras(tmp_path / "cameras.json")
    assert [c.name for c in cams] == ["a", "b"]
    np.testing.assert_allclose(cams[0].position, [0, 0, -5], atol=1e-12)
    np.testing.assert_allclose(cams[0].forward, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(cams[1].position, [5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cams[1].forward, [-1, 0, 0], atol=1e-12)
    assert (cams[0].fx, cams[0].fy, cams[0].cx, cams[0].cy) == (50.0, 55.0, 32.0, 24.0)
    for c in cams:  # the world origin is straight ahead: it lands on the principal point
        uv, z = c.project(np.zeros((1, 3)))
        np.testing.assert_allclose(uv[0], [32, 24], atol=1e-9)
        assert z[0] == pytest.approx(5.0)
    # a point at +y (down in OpenCV) appears below the centre
    uv, _ = cams[0].project(np.array([[0, 1.0, 0]]))
    assert uv[0, 1] > 24
    # a folder works too
    assert len(load_cameras(tmp_path)) == 2


def test_load_transforms_json_opengl_convention(tmp_path):
    # OpenGL camera at (0, 0, 4) with identity rotation looks along world -z, y up
    c2w = np.eye(4)
    c2w[:3, 3] = [0, 0, 4]
    c2w2 = np.eye(4)
    c2w2[:3, :3] = _rot_y(90)  # looks along -x (its -z column is (-1, 0, 0))
    c2w2[:3, 3] = [4, 0, 0]
    data = {"camera_angle_x": 2 * math.atan(0.5), "w": 80, "h": 60,
            "frames": [{"file_path": "images/r_0.png", "transform_matrix": c2w.tolist()},
                       {"file_path": "images/r_1.png", "transform_matrix": c2w2.tolist(), "fl_x": 70.0}]}
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    cams = load_cameras(tmp_path / "transforms.json")
    assert cams[0].name == "r_0"
    assert cams[0].fx == pytest.approx(80.0)       # 0.5 * w / tan(angle / 2)
    assert cams[1].fx == pytest.approx(70.0)
    np.testing.assert_allclose(cams[0].position, [0, 0, 4], atol=1e-12)
    np.testing.assert_allclose(cams[0].forward, [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(cams[1].forward, [-1, 0, 0], atol=1e-12)
    uv, z = cams[0].project(np.array([[0.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_allclose(uv[0], [40, 30], atol=1e-9)
    assert uv[1, 1] < 30 and z[0] == pytest.approx(4.0)  # world +y (GL up) appears above the centre


@pytest.mark.parametrize("content,needle", [
    (None, "not found"), ("{not json", "JSON"), ("[]", "no cameras"),
    ('[{"id": 0, "width": 10, "height": 10, "position": [0,0,0], "fx": 5, "fy": 5}]', "rotation"),
    ('{"frames": [{"transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}], "w": 8, "h": 8}', "focal"),
    ('{"foo": 1}', "invalid"),
])
def test_bad_camera_files(tmp_path, content, needle):
    p = tmp_path / "cameras.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(SundaeError) as e:
        load_cameras(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_find_cameras_for(tmp_path):
    ply = tmp_path / "out" / "point_cloud" / "iteration_30000" / "point_cloud.ply"
    ply.parent.mkdir(parents=True)
    ply.write_bytes(b"")
    assert find_cameras_for(ply) is None
    (tmp_path / "out" / "cameras.json").write_text("[]")
    assert find_cameras_for(ply) == (tmp_path / "out" / "cameras.json").resolve()
    other = tmp_path / "x" / "scene.ply"
    other.parent.mkdir()
    other.write_bytes(b"")
    (tmp_path / "x" / "transforms.json").write_text("{}")
    assert find_cameras_for(other).name == "transforms.json"


def test_camera_scaled_and_parse_up():
    c = Camera(np.eye(4), 100, 120, 50, 40, 100, 80, "v")
    s = c.scaled(50, 40)
    assert (s.fx, s.fy, s.cx, s.cy, s.width, s.height, s.name) == (50, 60, 25, 20, 50, 40, "v")
    np.testing.assert_allclose(parse_up("-y"), [0, -1, 0])
    np.testing.assert_allclose(parse_up("+z"), [0, 0, 1])
    with pytest.raises(SundaeError):
        parse_up("w")


def test_split_views_deterministic():
    cams = [Camera(np.eye(4), 1, 1, 1, 1, 2, 2, f"c{i}") for i in range(24)]
    tr, te = split_views(cams, 8)
    assert [c.name for c in te] == ["c0", "c8", "c16"] and len(tr) == 21
    tr2, te2 = split_views(cams, 8)
    assert [c.name for c in tr] == [c.name for c in tr2] and [c.name for c in te] == [c.name for c in te2]
    assert len(split_views(cams[:3], 8)[1]) == 1
    tr1, te1 = split_views(cams[:1], 8)
    assert len(te1) == 1 and len(tr1) == 0


EXPECTED_UP = {"donut.ply": [0, 0, 1], "guitar.ply": [0, -1, 0], "playbot_125k.ply": [0, -1, 0]}


@pytest.mark.parametrize("name", sorted(EXPECTED_UP))
def test_generated_cameras_frame_shared_scenes(name):
    path = ASSETS / name
    if not path.is_file():
        pytest.skip(f"scene {path} not available")
    from sundae_compress.io.ply import read_ply
    gs = read_ply(path)
    np.testing.assert_allclose(detect_up(gs), EXPECTED_UP[name])
    W, H = 160, 120
    cams = generate_cameras(gs, n=6, width=W, height=H)
    again = generate_cameras(gs, n=6, width=W, height=H)
    assert all(np.array_equal(a.viewmat, b.viewmat) for a, b in zip(cams, again))
    pts = gs.means[gs.opacities > 0][::7].astype(np.float64)
    lo, hi = np.percentile(pts, 2, 0), np.percentile(pts, 98, 0)
    centre = (lo + hi) / 2
    up = np.asarray(EXPECTED_UP[name], np.float64)
    for c in cams:
        uv, z = c.project(pts)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        assert inside.mean() > 0.9, (c.name, inside.mean())
        # the content fills a good part of the frame
        span = np.percentile(uv[inside], 98, 0) - np.percentile(uv[inside], 2, 0)
        assert max(span[0] / W, span[1] / H) > 0.5
        cuv, _ = c.project(centre[None])
        assert abs(cuv[0, 0] - W / 2) < 0.15 * W and abs(cuv[0, 1] - H / 2) < 0.15 * H
        # upright: the world up direction points up in the image (camera -y)
        assert (c.rotation @ up)[1] < -0.5


def test_generate_cameras_with_given_up_and_tiny_scene():
    from sundae_compress.gaussians import GaussianSet
    rng = np.random.default_rng(0)
    n = 500
    means = rng.normal(size=(n, 3)) * [1.0, 0.2, 0.5] + [3, 1, 2]
    gs = GaussianSet(means, np.tile([1.0, 0, 0, 0], (n, 1)), np.full((n, 3), -3.0), np.full(n, 2.0),
                     np.zeros((n, 1, 3)))
    cams = generate_cameras(gs, n=5, width=64, height=48, up="+x")
    assert len(cams) == 5 and len({c.name for c in cams}) == 5
    for c in cams:
        assert (c.rotation @ np.array([1.0, 0, 0]))[1] < -0.5     # +x appears up
        uv, z = c.project(np.array([[3.0, 1, 2]]))
        assert z[0] > 0 and abs(uv[0, 0] - 32) < 3 and abs(uv[0, 1] - 24) < 3
    assert not np.array_equal(generate_cameras(gs, n=5, seed=1)[0].viewmat, generate_cameras(gs, n=5, seed=0)[0].viewmat)
    with pytest.raises(SundaeError):
        generate_cameras(gs, n=0)


def test_load_images_matches_cameras(tmp_path):
    from sundae_compress.io.images import load_images, save_png

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", img)
    cams = [Camera(np.eye(4), 5, 5, 4, 3, 8, 6, "a")]
    got = load_images(tmp_path, cams)
    assert got[0].dtype == np.float32 and np.allclose(got[0] * 255, img)
    with pytest.raises(SundaeError):
        load_images(tmp_path, [Camera(np.eye(4), 5, 5, 4, 3, 8, 6, "missing")])
    with pytest.raises(SundaeError):
        load_images(tmp_path, [Camera(np.eye(4), 5, 5, 4, 3, 9, 6, "a")])


# -- the training view distribution and the evaluation view sets (issue 11) ----------------------

from sundae_compress.render.cameras import (EXCLUSION_DEG, NOVEL_SIZE, NOVEL_TABLE, TRAIN_DISTANCES,  # noqa: E402
                                            TRAIN_WIDTHS, ViewFrame, ViewSampler, look_at, near_views,
                                            novel_directions, novel_views)


@pytest.fixture(scope="module")
def guitar_frame():
    from sundae_compress.io.ply import read_ply

    if not (ASSETS / "guitar.ply").is_file():
        pytest.skip("shared scenes missing")
    return ViewFrame.of(read_ply(ASSETS / "guitar.ply"))


def _directions(frame, cams):
    return np.stack([frame.view_direction(c) for c in cams])


def test_sampler_covers_the_sphere(guitar_frame):
    f = guitar_frame
    s = ViewSampler(f, seed=5)
    cams = s._draws(2500)
    d = _directions(f, cams)
    # uniform on the sphere (minus ~6 % of exclusion cones): mean direction ~ 0, every octant and
    # every elevation band populated in proportion to its area
    assert np.linalg.norm(d.mean(0)) < 0.06
    octant = (d[:, 0] > 0) * 4 + (d[:, 1] > 0) * 2 + (d[:, 2] > 0)
    share = np.bincount(octant, minlength=8) / len(d)
    assert share.min() > 0.09 and share.max() < 0.16, share
    up = d @ f.up  # sin(elevation): uniform on [-1, 1] for a uniform sphere (Archimedes)
    hist = np.histogram(up, bins=10, range=(-1, 1))[0] / len(d)
    assert hist.min() > 0.07 and hist.max() < 0.13, hist
    assert up.min() < -0.98 and up.max() > 0.98  # straight below and straight above are drawn
    # distances: log-uniform over TRAIN_DISTANCES x radius
    dist = np.array([np.linalg.norm(c.position - f.centre) for c in cams]) / f.radius
    assert dist.min() >= TRAIN_DISTANCES[0] - 1e-9 and dist.max() <= TRAIN_DISTANCES[1] + 1e-9
    u = (np.log(dist) - np.log(TRAIN_DISTANCES[0])) / np.log(TRAIN_DISTANCES[1] / TRAIN_DISTANCES[0])
    np.testing.assert_allclose(np.quantile(u, [0.1, 0.25, 0.5, 0.75, 0.9]), [0.1, 0.25, 0.5, 0.75, 0.9], atol=0.03)
    # image sizes span the whole width range; focal lengths vary; the content centre stays in view
    widths = np.array([c.width for c in cams])
    assert widths.min() <= TRAIN_WIDTHS[0] + 5 and widths.max() >= TRAIN_WIDTHS[1] - 5
    fov = np.array([2 * np.degrees(np.arctan(0.5 * c.height / c.fy)) for c in cams])
    assert fov.min() < 35 and fov.max() > 55
    for c in cams[:200]:
        uv, z = c.project(f.centre[None])
        assert z[0] > 0 and -0.5 * c.width < uv[0, 0] < 1.5 * c.width
    # deterministic for a seed, different for another
    s2 = ViewSampler(f, seed=5)
    assert all(np.array_equal(a.viewmat, s2.sample().viewmat) for a in cams[:20])
    assert not np.array_equal(ViewSampler(f, seed=6).sample().viewmat, cams[0].viewmat)


def test_novel_views_are_disjoint_from_training_views_by_construction(guitar_frame):
    f = guitar_frame
    nd = novel_directions(f)
    novel = novel_views(f)
    assert len(novel) == len(NOVEL_TABLE) and all((c.width, c.height) == NOVEL_SIZE for c in novel)
    np.testing.assert_allclose(_directions(f, novel), nd, atol=1e-9)
    # real cameras placed right on the novel directions: draws around them must still avoid them
    real = [Camera(look_at(f.centre + 2.0 * f.radius * d, f.centre, f.up), 300, 300, 160, 120, 320, 240, f"r{i}")
            for i, d in enumerate(nd[:6])]
    for sampler in (ViewSampler(f, seed=1), ViewSampler(f, cameras=real, seed=2, real_share=0.7)):
        assert all(sampler.excluded(c) for c in novel)
        cams = sampler._draws(1500)
        cosines = _directions(f, cams) @ nd.T
        angle = np.degrees(np.arccos(np.clip(cosines.max(1), -1, 1)))
        assert angle.min() >= EXCLUSION_DEG
        assert max(c.width for c in cams) < NOVEL_SIZE[0]
        assert sampler.rejected > 0  # the cones are really enforced, not just unlikely
    # draws around the real cameras stay near them
    s = ViewSampler(f, cameras=real, seed=3, real_share=1.0)
    near_real = [s.sample() for _ in range(300)]
    pos = np.stack([c.position for c in real])
    gap = [np.linalg.norm(pos - c.position, axis=1).min() for c in near_real]
    assert np.median(gap) < 1.0 * f.radius
    # near views come from the training distribution (not excluded) but not from its seed
    nv = near_views(f, n=6)
    assert len(nv) == 6 and not any(ViewSampler(f).excluded(c) for c in nv)
    assert not any(np.allclose(c.viewmat, t.viewmat) for c in nv for t in ViewSampler(f, seed=0)._draws(50))


def test_draws_around_real_cameras_stay_on_the_capture_path(guitar_frame):
    """Cameras on a ring around the content (an inside-out capture): in-between draws interpolate
    neighbouring cameras, so they stay on the ring instead of cutting through the middle."""
    f = guitar_frame
    ring = 2.5 * f.radius
    real = []
    for i in range(24):
        a = 2 * np.pi * i / 24
        d = np.cos(a) * f.e1 + np.sin(a) * f.e2 + 0.2 * f.up
        d /= np.linalg.norm(d)
        real.append(Camera(look_at(f.centre + ring * d, f.centre, f.up), 300, 300, 160, 120, 320, 240, f"r{i}"))
    s = ViewSampler(f, cameras=real, seed=4, real_share=1.0)
    draws = [s.sample() for _ in range(400)]
    dist = np.array([np.linalg.norm(c.position - f.centre) for c in draws])
    # neighbours on a 24-camera ring are 15 deg apart: the chord midpoint is at cos(7.5 deg) = 0.991 ring
    assert dist.min() > 0.9 * ring
    assert np.median(dist) > 0.97 * ring


def test_frame_from_cameras_that_surround_the_content(guitar_frame):
    """A capture's cameras define the frame when they surround a point (an inside-out capture with
    a far background must get its generated and novel views around the cameras, not outside the
    background); cameras that do not surround one point (all looking one way) leave the content frame."""
    from sundae_compress.render.cameras import CAMERA_DISTANCE_IN_RADII, camera_frame

    f = guitar_frame
    target = f.centre + 0.3 * f.radius * f.e1
    ring = []
    for i in range(12):
        a = 2 * np.pi * i / 12
        d = np.cos(a) * f.e1 + np.sin(a) * f.e2 + 0.3 * f.up
        ring.append(Camera(look_at(target + 1.7 * d, target, f.up), 300, 300, 160, 120, 320, 240, f"r{i}"))
    cf = camera_frame(ring)
    assert cf is not None
    np.testing.assert_allclose(cf.centre, target, atol=1e-6)
    np.testing.assert_allclose(cf.up, f.up, atol=0.05)
    expected = np.median([np.linalg.norm(c.position - target) for c in ring]) / CAMERA_DISTANCE_IN_RADII
    assert cf.radius == pytest.approx(expected)
    # novel views then sit at 0.56-1.44x the capture's distance from its centre
    d = [np.linalg.norm(c.position - target) / (cf.radius * CAMERA_DISTANCE_IN_RADII) for c in novel_views(cf)]
    assert 0.5 < min(d) and max(d) < 1.5
    # a forward-facing rig (parallel axes) defines no frame
    fwd = [Camera(look_at(f.centre + np.array([x, 0.0, 3.0]), f.centre + np.array([x, 0.0, 0.0]), f.up),
                  300, 300, 160, 120, 320, 240, f"f{i}") for i, x in enumerate(np.linspace(-1, 1, 6))]
    assert camera_frame(fwd) is None
