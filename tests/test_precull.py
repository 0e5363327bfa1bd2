"""The off-screen pre-cull in ``project`` (issue 11, large scenes): it only skips work, never
changes what is projected, and it does drop the rows a cropped / partial view cannot see."""

from __future__ import annotations

import math

import torch

from sundae_compress.compensate.views import crop_camera
from sundae_compress.io.ply import read_ply
from sundae_compress.render import project as P
from sundae_compress.render.cameras import ViewFrame, ViewSampler


def _near_and_opacity_only(means, scales, opacity_logits, R, t, camera, tanx, tany):
    """The pre-cull before the off-screen bound: behind the near plane or too transparent."""
    z = means @ R[2] + t[2]
    ok = (z > P.NEAR) & (opacity_logits > math.log(P.ALPHA_MIN / (1 - P.ALPHA_MIN)))
    return torch.nonzero(ok).squeeze(1)


def test_precull_changes_nothing_and_drops_offscreen_rows(assets, monkeypatch):
    gs = read_ply(assets / "playbot_125k.ply")
    o = gs.to_torch()
    args = (o["means"], o["quats"], o["scales"], o["opacities"])
    sampler = ViewSampler(ViewFrame.of(gs), seed=3, widths=(160, 400))
    cams = []
    for i in range(8):
        c = sampler.sample()
        # the pool teacher's crops: a quarter of the image, off-centre
        cams.append(crop_camera(c, c.width // 2, c.height // 3, c.width // 2, c.height // 2) if i % 2 else c)
    fast = [P.project(*args, c) for c in cams]
    dropped = []
    for c, a in zip(cams, fast):
        R, t = P.view_tensors(c, o["means"])
        cand = P._precull(o["means"], o["scales"], o["opacities"], R, t, c, 0.5 * c.width / c.fx, 0.5 * c.height / c.fy)
        n_cand = len(gs) if cand is None else len(cand)
        assert a is None or n_cand >= len(a.index)
        if cand is not None and a is not None:
            assert bool(torch.isin(a.index, cand).all())  # every visible row was a candidate
        dropped.append(len(gs) - n_cand)
    with monkeypatch.context() as m:
        m.setattr(P, "_precull", _near_and_opacity_only)
        exact = [P.project(*args, c) for c in cams]
    for a, b in zip(fast, exact):
        assert (a is None) == (b is None)
        if a is None:
            continue
        assert torch.equal(a.index, b.index) and torch.equal(a.bbox, b.bbox)
        for f in ("mean2d", "conic", "depth", "opacity"):
            torch.testing.assert_close(getattr(a, f), getattr(b, f), rtol=1e-6, atol=1e-6)
    # the cropped views see a part of the character: most of the scene is skipped
    assert sum(dropped[1::2]) > len(gs), dropped  # > a quarter of the rows per crop on average
    assert min(dropped[1::2]) > 0, dropped
