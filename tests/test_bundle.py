"""The .sundae container: round trips, inspection, corruption/truncation/hostile headers, atomic writes."""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest

from sundae_compress.codec import CodecSettings, morton_sort
from sundae_compress.errors import BundleError, SundaeError
from sundae_compress.io import bundle as bmod
from sundae_compress.cli import format_inspect
from sundae_compress.io.bundle import MAGIC, NET_SECTION, READ_VERSIONS, VERSION, inspect_bundle, read_bundle, write_bundle
from sundae_compress.io.ply import read_ply

from conftest import make_tiny_scene

#: PlayCanvas SOG of guitar.ply (splat-transform v2.7.1): 1,196,155 bytes for 90,187 valid Gaussians.
SOG_GUITAR_BITS_PER_GAUSSIAN = 105.0


@pytest.fixture
def small_bundle(tmp_path):
    gs = make_tiny_scene(n=64, sh_degree=1, features=2)
    p = tmp_path / "s.sundae"
    write_bundle(p, gs, settings=CodecSettings(sh_codebook_size=16), net=b"\x08\x07onnx-bytes" * 3,
                 net_meta={"params": 42})
    return p, p.read_bytes()


def _rewrite_header(data: bytes, edit) -> bytes:
    """Apply ``edit`` to the JSON header and fix the header checksum (a hand-crafted bundle)."""
    (hlen,) = struct.unpack_from("<I", data, 12)
    header = json.loads(data[16:16 + hlen])
    edit(header)
    hb = json.dumps(header).encode()
    head = data[:12] + struct.pack("<I", len(hb)) + hb
    return head + struct.pack("<I", zlib.crc32(head)) + data[20 + hlen:]


def test_round_trip_with_features_net_and_info(tmp_path):
    gs = make_tiny_scene(n=400, sh_degree=2, features=5)
    gs.meta.update(source="/x/scene.ply", source_bytes=123456, source_count=410, dropped_rows=10)
    p = tmp_path / "a.sundae"
    net = bytes(range(256)) * 40
    stats = write_bundle(p, gs, settings=CodecSettings(sh_codebook_size=128, zstd_level=3), net=net,
                         net_meta={"num_features": 5, "params": 999, "dtype": "float16", "inputs": ["feat"]},
                         info={"pipeline": {"ratio": 0.1, "method": "spectral", "gamma": 1.0}})
    assert stats.file_bytes == os.path.getsize(p) and stats.count == 400
    b = read_bundle(p)
    assert b.net == net and b.net_meta == {"num_features": 5, "params": 999, "dtype": "float16", "inputs": ["feat"]}
    assert b.file_bytes == stats.file_bytes and [s.name for s in b.sections][-1] == NET_SECTION
    o, _ = morton_sort(gs, CodecSettings())
    d = b.gaussians
    assert d.features.shape == (400, 5) and d.sh_degree == 2
    assert np.abs(d.means - o.means).max() < 1e-4 and np.abs(d.features - o.features).max() < 0.05
    assert b.header["codec"]["settings"]["zstd_level"] == 3
    info = inspect_bundle(p)
    json.dumps(info)
    assert info["count"] == 400 and info["num_features"] == 5 and info["sh_degree"] == 2
    assert info["source"] == {"file": "scene.ply", "bytes": 123456, "count": 410, "valid": 400,
                              "compression_ratio": round(123456 / stats.file_bytes, 2)}
    assert info["net"]["present"] and info["net"]["bytes"] == len(net) and info["net"]["params"] == 999
    assert info["pipeline"]["ratio"] == 0.1
    total = info["header_bytes"] + sum(s["bytes"] for s in info["sections"])
    assert total == stats.file_bytes
    assert {s["name"] for s in info["sections"]} == {"means", "quats", "scales", "opacities", "sh_dc", "sh_rest",
                                                      "features", NET_SECTION}
    text = format_inspect(info)
    assert "sh_rest" in text and "999 params" in text and "ratio 0.1" in text and "=" not in text


def test_without_net(tmp_path):
    p = tmp_path / "b.sundae"
    write_bundle(p, make_tiny_scene(n=50, sh_degree=0))
    b = read_bundle(p)
    assert b.net is None and b.net_meta is None and b.gaussians.features is None
    assert not inspect_bundle(p)["net"]["present"] and "net            none" in format_inspect(inspect_bundle(p))
    with pytest.raises(SundaeError, match="net_meta"):
        write_bundle(tmp_path / "c.sundae", make_tiny_scene(n=5), net_meta={"params": 1})


def test_empty_net_bytes_round_trip(tmp_path):
    p = tmp_path / "e.sundae"
    write_bundle(p, make_tiny_scene(n=20, sh_degree=0), net=b"", net_meta={})
    b = read_bundle(p)
    assert b.net == b"" and b.net_meta == {}


def test_every_sampled_byte_flip_is_detected(small_bundle, tmp_path):
    p, data = small_bundle
    read_bundle(p)
    rng = np.random.default_rng(0)
    positions = sorted(set(range(24)) | set(rng.choice(len(data), 200, replace=False).tolist()))
    q = tmp_path / "flip.sundae"
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        q.write_bytes(bytes(bad))
        with pytest.raises(BundleError) as e:
            read_bundle(q)
        assert "\n" not in str(e.value) and str(q) in str(e.value)


def test_truncation_is_detected(small_bundle, tmp_path):
    p, data = small_bundle
    q = tmp_path / "cut.sundae"
    for n in sorted(set(np.linspace(0, len(data) - 1, 150).astype(int).tolist()) | {0, 3, 8, 15, 19}):
        q.write_bytes(data[:n])
        with pytest.raises(BundleError):
            read_bundle(q)
        with pytest.raises(BundleError):
            inspect_bundle(q)
    q.write_bytes(data + b"\x00")
    with pytest.raises(BundleError, match="after the last section"):
        read_bundle(q)


def test_wrong_magic_and_future_version(small_bundle, tmp_path):
    p, data = small_bundle
    q = tmp_path / "x.sundae"
    q.write_bytes(b"ply\nformat binary_little_endian 1.0\n" + data[36:])
    with pytest.raises(BundleError, match="not a .sundae bundle"):
        read_bundle(q)
    q.write_bytes(data[:8] + struct.pack("<I", max(READ_VERSIONS) + 1) + data[12:])
    with pytest.raises(BundleError, match=f"version {max(READ_VERSIONS) + 1} is newer"):
        read_bundle(q)
    with pytest.raises(BundleError, match="no such file"):
        read_bundle(tmp_path / "missing.sundae")


@pytest.mark.parametrize("edit, message", [
    (lambda h: (h.update(count=10**12), h["codec"].update(n=10**12)), "out of range"),
    (lambda h: (h.update(count=1 << 27), h["codec"].update(n=1 << 27)), "declares"),
    (lambda h: h["codec"].update(n=65), "disagree|declares"),
    (lambda h: h["codec"]["settings"].update(position_bits=64), "position_bits"),
    (lambda h: h["codec"].update(num_features=10**9), "out of range"),
    (lambda h: h["codec"]["sh_rest"].update(bits=10**9), "code width"),
    (lambda h: h["codec"].update(version=1), "codec version"),
    (lambda h: h["codec"].pop("version"), "later keys"),
    (lambda h: h["codec"]["settings"].update(sh_step2=float("inf")), "sh_step2"),
    (lambda h: h["sections"][0].update(raw_length=1 << 40), "raw bytes"),
    (lambda h: h["sections"].pop(), "do not start|do not match|after the last"),
    (lambda h: h.update(net=None), "do not match"),
    (lambda h: h["codec"]["means"].update(lo=[0, 0]), "lo/hi"),
])
def test_hostile_headers_fail_fast_without_allocating(small_bundle, tmp_path, edit, message):
    p, data = small_bundle
    q = tmp_path / "h.sundae"
    q.write_bytes(_rewrite_header(data, edit))
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(BundleError, match=message):
            read_bundle(q)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t < 2.0 and peak < 8 << 20


def test_zstd_frame_size_must_match_table(tmp_path):
    gs = make_tiny_scene(n=30, sh_degree=0)
    p = tmp_path / "z.sundae"
    write_bundle(p, gs)
    data = p.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 12)
    header = json.loads(data[16:16 + hlen])
    # replace the opacity section by a valid zstd frame of a different size, with a correct CRC
    sec = header["sections"][3]
    assert sec["name"] == "opacities"
    frame = bmod.compress(b"\x00" * (sec["raw_length"] + 1000), 3)
    base = 20 + hlen
    body = bytearray()
    for s in header["sections"]:
        blob = frame if s is sec else data[base + s["offset"]:base + s["offset"] + s["length"]]
        s["offset"], s["length"], s["crc32"] = len(body), len(blob), zlib.crc32(blob)
        body += blob
    hb = json.dumps(header).encode()
    head = MAGIC + struct.pack("<II", VERSION, len(hb)) + hb
    p.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + bytes(body))
    with pytest.raises(BundleError, match="opacities.*declares"):
        read_bundle(p)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    gs = make_tiny_scene(n=40, sh_degree=0)
    target = tmp_path / "out.sundae"

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bmod.os, "fsync", boom)
    with pytest.raises(SundaeError, match="No space left"):
        write_bundle(target, gs)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old contents")
    with pytest.raises(SundaeError):
        write_bundle(target, gs)
    assert target.read_bytes() == b"old contents" and len(list(tmp_path.iterdir())) == 1
    monkeypatch.undo()
    gs.means[0, 0] = np.inf
    with pytest.raises(SundaeError, match="non-finite"):
        write_bundle(target, gs)
    assert target.read_bytes() == b"old contents"


def test_guitar_smaller_than_sog_and_faithful(assets, tmp_path):
    gs = read_ply(assets / "guitar.ply")
    p = tmp_path / "guitar.sundae"
    stats = write_bundle(p, gs)
    bpg = 8 * stats.file_bytes / len(gs)
    assert bpg < SOG_GUITAR_BITS_PER_GAUSSIAN - 5, bpg
    b = read_bundle(p)
    o, _ = morton_sort(gs)
    lo, hi = gs.bounds()
    assert np.linalg.norm(b.gaussians.means - o.means, axis=1).max() <= 1e-4 * np.linalg.norm(hi - lo)
    assert inspect_bundle(p)["source"]["file"] == "guitar.ply"


def test_v1_bundles_still_read(tmp_path):
    """A bundle written by the v1 layout (kept in the writer for this test only) reads back."""
    gs = make_tiny_scene(n=200, sh_degree=2, features=1)
    v1 = CodecSettings(position_bits=16, scale_bits=8, sh_mode="vq", sh_codebook_size=32)
    p = tmp_path / "v1.sundae"
    write_bundle(p, gs, settings=v1, version=1, net=b"net", net_meta={})
    data = p.read_bytes()
    assert struct.unpack_from("<I", data, 8)[0] == 1
    b = read_bundle(p)
    assert b.header["version"] == 1 and "version" not in b.header["codec"] and b.net == b"net"
    assert b.header["codec"]["sh_rest"]["codebook_size"] == 32
    o, _ = morton_sort(gs, v1)
    assert np.abs(b.gaussians.means - o.means).max() < 1e-3 and np.abs(b.gaussians.sh[:, 0] - o.sh[:, 0]).max() < 0.2
    assert "SH rest codebook 32" in format_inspect(inspect_bundle(p))
    # a v1 file must hold a v1 codec layout and vice versa
    q = tmp_path / "mixed.sundae"
    q.write_bytes(_rewrite_header(data, lambda h: h["codec"].update(version=2)))
    with pytest.raises(BundleError, match="code width"):  # read as v2: a v1 SH section has no code width
        read_bundle(q)
    q.write_bytes(_rewrite_header(data, lambda h: h["codec"]["sh_rest"].update(codebook_size=10**9)))
    with pytest.raises(BundleError, match="codebook size"):
        read_bundle(q)
    # the default bundle of the same scene decodes every Gaussian
    st = write_bundle(tmp_path / "v4.sundae", gs)
    assert read_bundle(st.path).header["version"] == VERSION == 4 and len(read_bundle(st.path).gaussians) == 200


def test_v2_bundles_still_read(tmp_path):
    """A format-2 bundle (RGB colour: colour codebook, SH steps per RGB channel) reads back, and a v4
    codec layout declared as format 2 is refused."""
    gs = make_tiny_scene(n=300, sh_degree=2)
    s = CodecSettings()
    p = tmp_path / "v2.sundae"
    write_bundle(p, gs, settings=s, version=2)
    data = p.read_bytes()
    assert struct.unpack_from("<I", data, 8)[0] == 2
    b = read_bundle(p)
    h = b.header
    assert h["version"] == h["codec"]["version"] == 2 and h["codec"]["settings"]["color_mode"] == "codebook"
    assert "color_step" not in h["codec"]["settings"]
    o, _ = morton_sort(gs, s)
    # v2 scalar SH: every RGB value within half a step (no colour basis)
    assert np.abs(b.gaussians.sh[:, 1:] - o.sh[:, 1:]).max() <= 0.5 * s.sh_step1 + 1e-6
    v4 = read_bundle(write_bundle(tmp_path / "v4.sundae", gs, settings=s).path)
    assert v4.header["codec"]["settings"]["color_mode"] == "step" and v4.header["version"] == 4
    assert np.abs(v4.gaussians.sh - b.gaussians.sh).max() > 0  # a different coding of the same scene
    q = tmp_path / "relabelled.sundae"
    v4data = (tmp_path / "v4.sundae").read_bytes()
    as_v2 = v4data[:8] + struct.pack("<I", 2) + v4data[12:]
    q.write_bytes(_rewrite_header(as_v2, lambda h: (h.update(version=2), h["codec"].update(version=2))))
    with pytest.raises(BundleError, match="later keys"):
        read_bundle(q)
    q.write_bytes(_rewrite_header(as_v2, lambda h: (h.update(version=2), h["codec"].update(version=2),
                                                    h["codec"]["settings"].pop("color_step"))))
    with pytest.raises(BundleError, match="needs codec version 4"):
        read_bundle(q)
