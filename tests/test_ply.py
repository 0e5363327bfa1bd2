"""PLY reading and writing: real scenes, layouts, formats, types, and every error path."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from sundae_compress.errors import PlyError, SundaeError
from sundae_compress.gaussians import GaussianSet
from sundae_compress.io.ply import REQUIRED_PROPERTIES, read_ply, write_ply

FIELDS = ("means", "quats", "scales", "opacities", "sh")
SCENES = ("donut.ply", "guitar.ply", "playbot_125k.ply")


def assert_same(a: GaussianSet, b: GaussianSet):
    """Bit-exact equality of every array."""
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype == np.float32, f
        assert x.shape == y.shape, f
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), f"{f} differs"


def columns(gs: GaussianSet) -> dict:
    """Property name -> column, in the on-disk 3DGS meaning (f_rest channel-major)."""
    n, k = len(gs), gs.sh.shape[1]
    cols = {"x": gs.means[:, 0], "y": gs.means[:, 1], "z": gs.means[:, 2], "opacity": gs.opacities}
    for i in range(3):
        cols[f"f_dc_{i}"] = gs.sh[:, 0, i]
        cols[f"scale_{i}"] = gs.scales[:, i]
    for i in range(4):
        cols[f"rot_{i}"] = gs.quats[:, i]
    rest = gs.sh[:, 1:].transpose(0, 2, 1).reshape(n, 3 * (k - 1))
    for i in range(rest.shape[1]):
        cols[f"f_rest_{i}"] = rest[:, i]
    return cols


def write_with_plyfile(path, cols: dict, order=None, types=None, text=False, byte_order="<", extra=()):
    """Write ``cols`` with the independent plyfile writer, in the given property order and types."""
    order = list(order or cols)
    types = types or {}
    dt = [(name, types.get(name, "f4")) for name in order]
    arr = np.empty(len(next(iter(cols.values()))), dtype=dt)
    for name in order:
        arr[name] = cols[name]
    PlyData([PlyElement.describe(arr, "vertex"), *extra], text=text, byte_order=byte_order).write(str(path))
    return path


def load_refrender(assets):
    spec = importlib.util.spec_from_file_location("refrender", assets.parent / "tools" / "refrender.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- real scenes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCENES)
def test_shared_scene_matches_independent_reader(assets, name):
    ref = load_refrender(assets).load_ply(str(assets / name))
    gs = read_ply(assets / name)
    assert len(gs) == len(ref["means"])
    assert np.array_equal(gs.means, ref["means"].numpy())
    assert np.array_equal(gs.scales, ref["scales"].numpy())
    assert np.array_equal(gs.opacities, ref["opac"].numpy())
    assert np.array_equal(gs.sh, ref["sh"].numpy())
    q = ref["quats"].numpy().astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(gs.quats, q, atol=2e-7)
    np.testing.assert_allclose(np.linalg.norm(gs.quats.astype(np.float64), axis=1), 1.0, atol=1e-6)
    assert gs.meta["format"] == "binary_little_endian"
    assert gs.meta["source_bytes"] == (assets / name).stat().st_size
    assert gs.meta["ignored_properties"] == []


def test_scene_sizes_and_degrees(assets):
    donut, guitar, playbot = (read_ply(assets / n) for n in SCENES)
    assert (len(donut), donut.sh_degree, donut.meta["dropped_rows"]) == (45624, 0, 0)
    assert (len(guitar), guitar.meta["source_count"], guitar.meta["dropped_rows"]) == (90187, 90854, 667)
    assert guitar.finite_mask().all()
    assert (len(playbot), playbot.sh_degree, playbot.sh.shape) == (125000, 2, (125000, 9, 3))


def test_guitar_strict_raises(assets):
    with pytest.raises(PlyError, match=r"667 of 90854 rows hold NaN/Inf.*strict"):
        read_ply(assets / "guitar.ply", strict=True)


@pytest.mark.parametrize("name", SCENES)
def test_round_trip_bit_exact(assets, tmp_path, name):
    gs = read_ply(assets / name)
    out = tmp_path / "rt.ply"
    write_ply(gs, out)
    again = read_ply(out)
    assert_same(gs, again)
    write_ply(again, out)  # and once more: writing is deterministic
    assert_same(gs, read_ply(out))
    assert [f for f in os.listdir(tmp_path)] == ["rt.ply"]  # no temp file left behind


def test_playbot_sh_degree_drop(assets):
    full = read_ply(assets / "playbot_125k.ply")
    d1 = read_ply(assets / "playbot_125k.ply", sh_degree=1)
    d0 = read_ply(assets / "playbot_125k.ply", sh_degree=0)
    assert d1.sh.shape == (125000, 4, 3) and d0.sh.shape == (125000, 1, 3)
    assert np.array_equal(d1.sh, full.sh[:, :4])
    assert np.array_equal(d0.sh, full.sh[:, :1])
    assert d1.meta["file_sh_degree"] == 2
    with pytest.raises(SundaeError, match="holds SH degree 2; cannot read it with SH degree 3"):
        read_ply(assets / "playbot_125k.ply", sh_degree=3)
    with pytest.raises(SundaeError, match="SH degree must be"):
        read_ply(assets / "playbot_125k.ply", sh_degree=5)


# -- generated scenes, layouts, formats and types -------------------------------------------------

@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_generated_round_trip_and_layout(tiny_scene, tmp_path, degree):
    gs = tiny_scene(n=300, seed=degree, sh_degree=degree)
    write_ply(gs, tmp_path / "g.ply")
    assert_same(gs, read_ply(tmp_path / "g.ply"))
    v = PlyData.read(str(tmp_path / "g.ply"))["vertex"]
    n_rest = 3 * ((degree + 1) ** 2 - 1)
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(n_rest)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert list(v.data.dtype.names) == expected
    assert v.data.dtype["x"] == np.dtype("<f4")
    assert not v.data["nx"].any()
    if degree:  # channel-major: f_rest_0 is the first red coefficient, then green starts
        k = (degree + 1) ** 2 - 1
        assert np.array_equal(v.data["f_rest_0"], gs.sh[:, 1, 0])
        assert np.array_equal(v.data[f"f_rest_{k}"], gs.sh[:, 1, 1])


def test_property_order_does_not_matter(tiny_scene, tmp_path):
    gs = tiny_scene(n=200, seed=3, sh_degree=2)
    cols = columns(gs)
    cols["nx"] = np.ones(len(gs), np.float32)
    cols["mystery"] = np.arange(len(gs), dtype=np.float32)
    order = list(cols)
    np.random.default_rng(0).shuffle(order)
    a = read_ply(write_with_plyfile(tmp_path / "a.ply", cols, order=order))
    assert_same(gs, a)
    assert sorted(a.meta["ignored_properties"]) == ["mystery", "nx"]


@pytest.mark.parametrize("fmt", ["ascii", "big"])
def test_ascii_and_big_endian(tiny_scene, tmp_path, fmt):
    gs = tiny_scene(n=150, seed=4, sh_degree=1)
    path = write_with_plyfile(tmp_path / "f.ply", columns(gs), text=fmt == "ascii",
                              byte_order=">" if fmt == "big" else "<")
    got = read_ply(path)
    assert_same(gs, got)
    assert got.meta["format"] == {"ascii": "ascii", "big": "binary_big_endian"}[fmt]


def test_float64_and_integer_properties(tiny_scene, tmp_path):
    gs = tiny_scene(n=120, seed=5, sh_degree=0)
    cols = columns(gs)
    types = {"x": "f8", "y": "f8", "z": "f8"}
    cols["opacity"] = np.arange(120) % 7 - 3                 # int8 (char)
    cols["scale_0"] = -(np.arange(120) % 5)                  # int16
    cols["scale_1"] = np.full(120, -4)                       # int32
    cols["scale_2"] = np.arange(120) % 200                   # uint8
    cols["f_dc_0"] = np.arange(120) * 1000                   # uint32
    cols["f_dc_1"] = np.arange(120) % 60000                  # uint16
    types.update({"opacity": "i1", "scale_0": "i2", "scale_1": "i4", "scale_2": "u1",
                  "f_dc_0": "u4", "f_dc_1": "u2"})
    for text in (False, True):
        got = read_ply(write_with_plyfile(tmp_path / f"t{text}.ply", cols, types=types, text=text))
        assert np.array_equal(got.means, gs.means)  # float32 values stored exactly as doubles
        assert np.array_equal(got.opacities, cols["opacity"].astype(np.float32))
        assert np.array_equal(got.scales[:, 0], cols["scale_0"].astype(np.float32))
        assert np.array_equal(got.scales[:, 2], cols["scale_2"].astype(np.float32))
        assert np.array_equal(got.sh[:, 0, 0], cols["f_dc_0"].astype(np.float32))
        assert np.array_equal(got.sh[:, 0, 1], cols["f_dc_1"].astype(np.float32))


def test_other_elements_are_skipped(tiny_scene, tmp_path):
    gs = tiny_scene(n=50, seed=6, sh_degree=0)
    cam = np.zeros(3, dtype=[("a", "f8"), ("b", "u1")])
    cam["a"] = np.nan  # must not leak into the vertices
    faces = np.empty(2, dtype=[("vertex_indices", "O")])
    faces["vertex_indices"] = [np.array([0, 1, 2], "i4"), np.array([1, 2, 3], "i4")]
    for text in (False, True):
        arr = np.empty(len(gs), dtype=[(n, "f4") for n in columns(gs)])
        for n, c in columns(gs).items():
            arr[n] = c
        path = tmp_path / f"e{text}.ply"
        PlyData([PlyElement.describe(cam, "camera"), PlyElement.describe(arr, "vertex"),
                 PlyElement.describe(faces, "face")], text=text).write(str(path))
        got = read_ply(path)
        assert_same(gs, got)
        assert got.meta["skipped_elements"] == ["camera", "face"]


def test_nan_rows_dropped_and_zero_quats(tiny_scene, tmp_path):
    gs = tiny_scene(n=100, seed=7, sh_degree=1)
    cols = columns(gs)
    cols["scale_1"] = cols["scale_1"].copy()
    cols["scale_1"][[3, 50]] = [np.nan, np.inf]
    cols["f_rest_8"] = cols["f_rest_8"].copy()
    cols["f_rest_8"][10] = -np.inf
    for i in range(4):
        cols[f"rot_{i}"] = cols[f"rot_{i}"].copy()
        cols[f"rot_{i}"][[20, 21]] = 0.0
    cols["rot_0"][30] = 3.0  # not unit: gets normalised
    got = read_ply(write_with_plyfile(tmp_path / "n.ply", cols))
    keep = np.setdiff1d(np.arange(100), [3, 10, 50])
    assert got.meta["dropped_rows"] == 3 and len(got) == 97
    assert np.array_equal(got.means, gs.means[keep])
    assert got.meta["zero_quats"] == 2
    assert np.array_equal(got.quats[[18, 19]], [[1, 0, 0, 0]] * 2)  # rows 20, 21 after dropping 3, 10
    q30 = np.array([cols[f"rot_{i}"][30] for i in range(4)], np.float64)
    np.testing.assert_allclose(got.quats[28], q30 / np.linalg.norm(q30), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(got.quats, axis=1), 1.0, atol=1e-6)
    with pytest.raises(PlyError, match="3 of 100 rows"):
        read_ply(tmp_path / "n.ply", strict=True)
    # a dropped SH band with NaN does not drop the row
    got0 = read_ply(tmp_path / "n.ply", sh_degree=0)
    assert got0.meta["dropped_rows"] == 2


# -- errors ---------------------------------------------------------------------------------------

HEADER = ("ply\nformat {fmt} 1.0\nelement vertex {n}\n"
          + "".join(f"property float {p}\n" for p in REQUIRED_PROPERTIES) + "end_header\n")


def raw_file(tmp_path, header: str, body: bytes = b"", name="bad.ply"):
    p = tmp_path / name
    p.write_bytes(header.encode("ascii") + body)
    return p


def expect_error(path, pattern, **kw):
    with pytest.raises(PlyError, match=pattern) as ei:
        read_ply(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_missing_file_and_directory(tmp_path):
    expect_error(tmp_path / "nope.ply", "no such file")
    expect_error(tmp_path, "not a regular file")


def test_bad_magic_and_empty(tmp_path, assets):
    data = (assets / "donut.ply").read_bytes()[:4000]
    expect_error(raw_file(tmp_path, "", b"PLY" + data[3:]), "not a PLY file")
    expect_error(raw_file(tmp_path, "", b"\x89PNG\r\n"), "not a PLY file")
    expect_error(raw_file(tmp_path, "", b""), "not a PLY file.*empty")


def test_truncated_real_file(assets, tmp_path):
    data = (assets / "donut.ply").read_bytes()
    hdr = data.index(b"end_header\n") + len(b"end_header\n")
    for cut in (10, hdr - 5):  # inside the header
        expect_error(raw_file(tmp_path, "", data[:cut]), "header is not terminated")
    for cut in (hdr, hdr + 1, hdr + 56 * 1000 + 3, len(data) - 1):  # inside the body
        msg = expect_error(raw_file(tmp_path, "", data[:cut]), "file truncated")
        assert f"header declares 45624 vertices ({45624 * 56} bytes) but only {cut - hdr} bytes" in msg


def test_count_larger_than_file_is_not_allocated(tmp_path):
    p = raw_file(tmp_path, HEADER.format(fmt="binary_little_endian", n=10**15), b"\0" * 560)
    expect_error(p, r"header declares 1000000000000000 vertices \(56000000000000000 bytes\) but only 560")


def test_endless_header(tmp_path):
    p = raw_file(tmp_path, "ply\nformat ascii 1.0\n" + "comment blah blah blah\n" * 60000)
    expect_error(p, "not terminated within")


@pytest.mark.parametrize("header, pattern", [
    (HEADER.format(fmt="binary_middle_endian", n=1), "unknown PLY format 'binary_middle_endian'"),
    (HEADER.format(fmt="ascii", n=1).replace("vertex", "points"),
     "no 'vertex' element.*wrong element name.*'points'"),
    (HEADER.format(fmt="ascii", n=1).replace("property float opacity\n", "")
     .replace("property float rot_2\n", ""), "lacks required 3DGS properties: opacity, rot_2"),
    (HEADER.format(fmt="ascii", n=1).replace("float x", "float128 x"), "unknown property type 'float128'"),
    (HEADER.format(fmt="ascii", n=1).replace("end_header", "property list uchar int idx\nend_header"),
     "list properties"),
    (HEADER.format(fmt="ascii", n=1).replace("end_header", "".join(
        f"property float f_rest_{i}\n" for i in range(7)) + "end_header"), "7 f_rest_.*not a valid SH size"),
    (HEADER.format(fmt="ascii", n=1).replace("end_header", "".join(
        f"property float f_rest_{i}\n" for i in range(1, 10)) + "end_header"), "missing f_rest_0"),
    (HEADER.format(fmt="ascii", n=1).replace("end_header", "property float x\nend_header"), "'x' twice"),
    (HEADER.format(fmt="ascii", n=-3), "element count '-3'"),
    (HEADER.format(fmt="binary_little_endian", n=0), "contains no Gaussians"),
    (HEADER.replace("format {fmt} 1.0\n", "").format(n=1), "no 'format' line"),
    (HEADER.format(fmt="ascii", n=1).replace("end_header", "bogus line\nend_header"), "unexpected keyword"),
])
def test_header_errors(tmp_path, header, pattern):
    expect_error(raw_file(tmp_path, header, b"0 " * 14 + b"\n"), pattern)


def test_non_ascii_header(tmp_path):
    p = raw_file(tmp_path, "", HEADER.format(fmt="ascii", n=1).replace("comment", "").encode()
                 .replace(b"property float x", b"property float \xff\xfe"))
    expect_error(p, "non-ASCII")


@pytest.mark.parametrize("body, pattern", [
    ("0 " * 14 + "\n" + "0 " * 13 + "\n", "bad ASCII vertex data: line 20 has 13 values, expected 14"),
    ("0 " * 14 + "\n" + "0 " * 13 + "abc\n", "bad ASCII vertex data: line 20: 'abc' is not a number"),
    ("0 " * 14 + "\n", "file truncated: header declares 2 vertices but only 1 lines"),
    ("0 " * 14, "file truncated: header declares 2 vertices but only 1 lines"),
    ("", "file truncated: header declares 2 vertices but only 0 lines"),
    ("0 " * 14 + "\n\n" + "0 " * 14 + "\n", "line 20 has 0 values, expected 14"),
])
def test_ascii_body_errors(tmp_path, body, pattern):
    expect_error(raw_file(tmp_path, HEADER.format(fmt="ascii", n=2), body.encode()), pattern)


def test_ascii_all_nan_rows(tmp_path):
    body = ("nan " + "0 " * 13 + "\n") * 2
    expect_error(raw_file(tmp_path, HEADER.format(fmt="ascii", n=2), body.encode()), "no usable Gaussians")


def test_write_errors_and_atomic_replace(tiny_scene, tmp_path):
    gs = tiny_scene(n=10, seed=8, sh_degree=0)
    with pytest.raises(SundaeError, match="does not exist"):
        write_ply(gs, tmp_path / "missing" / "x.ply")
    target = tmp_path / "x.ply"
    target.write_bytes(b"old contents")
    write_ply(gs, target)
    assert_same(gs, read_ply(target))
    assert sorted(os.listdir(tmp_path)) == ["x.ply"]


# -- the example scene generator ------------------------------------------------------------------

def load_make_scene():
    path = Path(__file__).resolve().parents[1] / "examples" / "make_scene.py"
    spec = importlib.util.spec_from_file_location("make_scene", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_scene_is_a_plausible_deterministic_scene():
    from scipy.spatial import cKDTree

    make_scene = load_make_scene().make_scene
    gs = make_scene(count=20000, seed=3)
    assert len(gs) == 20000 and gs.sh_degree == 3 and gs.finite_mask().all()
    assert_same(gs, make_scene(count=20000, seed=3))
    assert not np.array_equal(gs.means, make_scene(count=20000, seed=4).means)
    np.testing.assert_allclose(np.linalg.norm(gs.quats, axis=1), 1.0, atol=1e-6)
    # view-dependent colour of moderate size
    rest = np.abs(gs.sh[:, 1:])
    assert 0.01 < rest.mean() < 0.3 and rest.max() < 2.0
    # mostly opaque, some faint
    alpha = gs.alphas
    assert np.median(alpha) > 0.9 and 0.05 < (alpha < 0.5).mean() < 0.3
    # several scales: a central object (radius ~2) inside a shell of radius 8
    r = np.linalg.norm(gs.means, axis=1)
    assert (r < 2.5).mean() > 0.4 and (np.abs(r - 8.0) < 1e-3).mean() > 0.3
    # surface splats are flat (one axis much smaller) and overlap their neighbours
    s = np.sort(np.exp(gs.scales), axis=1)
    obj = r < 2.5
    assert np.median(s[obj, 0] / s[obj, 1]) < 0.3
    nn = cKDTree(gs.means[obj]).query(gs.means[obj], k=2)[0][:, 1]
    assert np.median(nn) < 2 * np.median(s[obj, 1])
    assert np.median(s[np.abs(r - 8) < 1e-3, 2]) > 2 * np.median(s[obj, 2])  # background splats are bigger


def test_make_scene_cli(tmp_path):
    import subprocess
    import sys

    script = load_make_scene().__file__
    out = tmp_path / "scene.ply"
    res = subprocess.run([sys.executable, script, "-o", str(out), "--count", "3000", "--seed", "2"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "3000 Gaussians" in res.stderr
    assert_same(read_ply(out), load_make_scene().make_scene(count=3000, seed=2))
    bad = subprocess.run([sys.executable, script, "-o", str(out), "--count", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "at least 100" in bad.stderr


def test_header_variants(tiny_scene, tmp_path):
    """CRLF line endings, comments mentioning end_header, obj_info, and a binary element with
    lists before the vertices (whose size cannot be known)."""
    gs = tiny_scene(n=20, seed=9, sh_degree=0)
    body = np.concatenate([columns(gs)[n][:, None] for n in REQUIRED_PROPERTIES], 1).astype("<f4").tobytes()
    hdr = HEADER.format(fmt="binary_little_endian", n=20).replace(
        "element", "comment the end_header line ends this\nobj_info x\nelement")
    assert_same(gs, read_ply(raw_file(tmp_path, hdr.replace("\n", "\r\n"), body)))
    assert_same(gs, read_ply(raw_file(tmp_path, hdr, body)))
    listed = hdr.replace("element vertex", "element face 1\nproperty list uchar int idx\nelement vertex")
    expect_error(raw_file(tmp_path, listed, b"\x01\0\0\0\0" + body), "cannot skip element 'face'")
