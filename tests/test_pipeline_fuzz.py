"""The no-fine-tune pipeline on mutated and awkward PLYs (engine: tests/pipeline_fuzzing.py; the
long run is benchmarks/bench_fuzz_pipeline.py): no hang, no traceback, no warning, ever."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline_fuzzing as pf
from sundae_compress.errors import PlyError


def test_pipeline_fuzz(tmp_path):
    s = pf.fuzz_pipeline(200, 11, tmp_path, time_limit=20.0)
    detail = "\n".join(f"case {f['index']} ({f['seed']}, {'+'.join(f['mutations'])}, ratio {f['ratio']}, "
                       f"merge {f['merge']}): {f['outcome']}: {f['message']}" for f in s["failures"][:10])
    assert s["counts"]["hang"] == 0 and s["counts"]["crash"] == 0 and s["counts"]["warning"] == 0, detail
    assert s["counts"]["ok"] >= 25 and s["counts"]["error"] >= 25  # both kinds of outcome exercised


def _donut_with(tmp_path, edit):
    src = pf.ASSETS / "donut.ply"
    if not src.is_file():
        pytest.skip("donut.ply not available")
    data = src.read_bytes()
    i = data.index(b"end_header\n") + len(b"end_header\n")
    head, body = edit(data[:i], data[i:])
    p = tmp_path / "case.ply"
    p.write_bytes(head + body)
    return p


def test_mistyped_x_column_is_refused_in_one_line(tmp_path):
    """x declared uchar: the rows are misaligned and the centres reach ±3.4e38 (this used to spin
    for minutes in the neighbour search)."""
    p = _donut_with(tmp_path, lambda h, b: (h.replace(b"property float x\n", b"property uchar x\n", 1), b))
    from sundae_compress.io.ply import read_ply

    with pytest.raises(PlyError, match=r"centre coordinates reach 3\.4e\+38, beyond the ±1e\+08"):
        read_ply(p)
    from sundae_compress.api import compress

    with pytest.raises(PlyError, match="3.4e"):
        compress(p, tmp_path / "o.sundae", ratio=0.2, finetune=False)
    assert not (tmp_path / "o.sundae").exists()


def test_coincident_export_compresses(tmp_path):
    """Every centre of the donut moved onto one point (an export bug): compresses, quickly."""
    from sundae_compress.api import compress
    from sundae_compress.io.ply import read_ply, write_ply

    src = pf.ASSETS / "donut.ply"
    if not src.is_file():
        pytest.skip("donut.ply not available")
    gs = read_ply(src)
    gs.means[:] = np.float32([0.1, -0.2, 0.3])
    write_ply(gs, tmp_path / "c.ply")
    rep = compress(tmp_path / "c.ply", tmp_path / "c.sundae", ratio=0.2, finetune=False)
    assert rep.kept_count == round(0.2 * len(gs))
