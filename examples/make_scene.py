#!/usr/bin/env python
"""Generate a synthetic but realistic 3DGS scene and write it as a standard PLY.

The scene has structure at several scales, like a trained capture:

* a textured object at the centre: a (2, 3) torus knot tube with colour stripes along its length
  and a checkered sphere inside it, covered by flat splats tangent to the surface (smallest axis
  along the normal) that overlap enough to look solid;
* a large background shell (sphere of radius 8) with a smooth sky-to-ground colour gradient,
  covered by bigger splats;
* small scattered detail: little, partly transparent blobs floating between object and shell.

Colours carry SH degree 3: band 1 adds a view-dependent sheen (brighter when seen along the
surface normal), bands 2 and 3 small random variation. Opacities are mostly high, some low.
Up is -y (the convention of most captures). Deterministic for a given seed.

Like a real 3DGS training output, the scene comes with the cameras it would have been captured
from: ``cameras.json`` (INRIA format) next to the PLY, views inside the shell orbiting the object.
(Cameras generated from the outside would only see the shell.)

Usage: ``python examples/make_scene.py -o scene.ply [--count 120000] [--seed 0] [--no-cameras]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from sundae_compress.gaussians import GaussianSet, normalize_quats, rgb_to_sh0, rotmat_to_quat  # noqa: E402
from sundae_compress.io.ply import write_ply  # noqa: E402

SH_DEGREE = 3
SHELL_RADIUS = 8.0
#: Splat standard deviation as a fraction of the mean spacing between samples (> 0.5 overlaps).
COVER = 0.9


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _tangent_frame(normal: np.ndarray, rng) -> np.ndarray:
    """(N, 3, 3) rotations whose columns are two random tangents and the normal."""
    helper = np.where(np.abs(normal[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    u = _unit(np.cross(normal, helper))
    v = np.cross(normal, u)
    a = rng.uniform(0, np.pi, (len(normal), 1))  # random in-plane spin
    u, v = np.cos(a) * u + np.sin(a) * v, -np.sin(a) * u + np.cos(a) * v
    return np.stack([u, v, normal], axis=2)


def _noise(points: np.ndarray, rng, octaves: int = 4, freq: float = 1.5) -> np.ndarray:
    """Smooth pseudo-random field in about [-1, 1]: a sum of random plane waves."""
    out = np.zeros(len(points))
    for o in range(octaves):
        d = _unit(rng.normal(size=(3, 3)))
        ph = rng.uniform(0, 2 * np.pi, 3)
        f = freq * 2 ** o
        out += (np.sin(points @ d.T * f + ph).sum(1) / 3) * 0.5 ** o
    return out / 1.9


def _surface_splats(points, normals, area, rng, flat=0.12, jitter=0.35):
    """Rotations and log-scales for splats covering a surface of ``area`` with ``len(points)``
    samples: tangent sigma ~ COVER x spacing, normal sigma ``flat`` times smaller."""
    n = len(points)
    spacing = np.sqrt(area / n)
    tang = COVER * spacing * np.exp(rng.normal(0, jitter, (n, 2)))
    scales = np.column_stack([tang, tang.min(1) * flat * np.exp(rng.normal(0, 0.3, n))])
    return _tangent_frame(normals, rng), np.log(scales)


def _knot(n, rng):
    """Samples on a (2, 3) torus-knot tube: points, normals, RGB, surface area."""
    t_grid = np.linspace(0, 2 * np.pi, 4097)

    def curve(t):
        r = 1.0 + 0.45 * np.cos(3 * t)
        return np.stack([r * np.cos(2 * t), 0.45 * np.sin(3 * t) - 0.2, r * np.sin(2 * t)], -1) * 1.4

    speed = np.linalg.norm(np.gradient(curve(t_grid), t_grid, axis=0), axis=1)
    cdf = np.concatenate([[0], np.cumsum((speed[1:] + speed[:-1]) / 2 * np.diff(t_grid))])
    tube = 0.22
    area = 2 * np.pi * tube * cdf[-1]
    t = np.interp(rng.uniform(0, cdf[-1], n), cdf, t_grid)  # uniform in arc length
    h = 1e-3
    c, c_prev, c_next = curve(t), curve(t - h), curve(t + h)
    tangent = _unit(c_next - c_prev)
    bend = c_next - 2 * c + c_prev
    normal0 = _unit(bend - (bend * tangent).sum(1, keepdims=True) * tangent)
    binormal = np.cross(tangent, normal0)
    phi = rng.uniform(0, 2 * np.pi, (n, 1))
    normal = np.cos(phi) * normal0 + np.sin(phi) * binormal
    points = c + tube * normal
    stripe = (np.floor(t * 48 / (2 * np.pi)) % 2)[:, None]
    warm, cool = np.array([0.95, 0.55, 0.12]), np.array([0.15, 0.35, 0.85])
    rgb = stripe * warm + (1 - stripe) * cool
    rgb = rgb * (0.8 + 0.2 * _noise(points, rng, freq=4.0))[:, None]
    rgb += 0.25 * (np.cos(phi) > 0.93)  # a thin bright seam along the tube
    return points, normal, rgb, area


def _checker_sphere(n, rng, radius=0.55):
    normal = _unit(rng.normal(size=(n, 3)))
    lat = np.arcsin(np.clip(-normal[:, 1], -1, 1))
    lon = np.arctan2(normal[:, 2], normal[:, 0])
    check = ((np.floor(lat / (np.pi / 8)) + np.floor(lon / (np.pi / 8))) % 2)[:, None]
    rgb = check * np.array([0.92, 0.9, 0.85]) + (1 - check) * np.array([0.7, 0.08, 0.1])
    rgb = rgb * (0.85 + 0.15 * _noise(normal * 3, rng))[:, None]
    return radius * normal, normal, rgb, 4 * np.pi * radius ** 2


def _shell(n, rng):
    normal = _unit(rng.normal(size=(n, 3)))  # outward; the camera sees the inside
    up = -normal[:, 1:2]  # -y is up
    sky, horizon, ground = np.array([0.25, 0.45, 0.85]), np.array([0.85, 0.85, 0.8]), np.array([0.35, 0.28, 0.2])
    w = np.clip(up, 0, 1)
    rgb = np.where(up > 0, (1 - w) * horizon + w * sky, (1 + up) * horizon + (-up) * ground)
    rgb = rgb + 0.05 * _noise(normal * 2, rng, octaves=2)[:, None]
    return SHELL_RADIUS * normal, -normal, rgb, 4 * np.pi * SHELL_RADIUS ** 2


def _sh_rest(normals, n, rng, sheen):
    """(n, 15, 3) higher-order SH: a band-1 sheen towards the normal plus small random terms."""
    rest = np.zeros((n, 15, 3))
    # band 1 is (-y, z, -x) x C1; with view dirs d this adds -C1 * sheen * (d . normal)
    rest[:, 0] = (sheen * normals[:, 1])[:, None]
    rest[:, 1] = (-sheen * normals[:, 2])[:, None]
    rest[:, 2] = (sheen * normals[:, 0])[:, None]
    rest[:, 3:8] += rng.normal(0, 0.05, (n, 5, 3))
    rest[:, 8:15] += rng.normal(0, 0.03, (n, 7, 3))
    return rest


def _opacity_logits(n, rng, low_fraction):
    logit = rng.normal(3.5, 0.8, n)
    low = rng.random(n) < low_fraction
    logit[low] = rng.normal(-1.0, 1.0, low.sum())
    return logit


def make_scene(count: int = 120000, seed: int = 0) -> GaussianSet:
    """A procedural SH-degree-3 scene of ``count`` Gaussians (see the module docstring)."""
    if count < 100:
        raise ValueError("count must be at least 100")
    rng = np.random.default_rng(seed)
    n_knot, n_sphere, n_shell = int(count * 0.42), int(count * 0.13), int(count * 0.39)
    n_detail = count - n_knot - n_sphere - n_shell
    parts = []
    for (points, normals, rgb, area), sheen, low in (
            (_knot(n_knot, rng), 0.35, 0.06),
            (_checker_sphere(n_sphere, rng), 0.25, 0.04),
            (_shell(n_shell, rng), 0.0, 0.02)):
        rot, log_scales = _surface_splats(points, normals, area, rng)
        m = len(points)
        sh = np.concatenate([rgb_to_sh0(np.clip(rgb, 0, 1))[:, None], _sh_rest(normals, m, rng, sheen)], 1)
        parts.append((points, rot, log_scales, _opacity_logits(m, rng, low), sh))

    # scattered detail: small, roughly isotropic blobs floating between object and shell
    direction = _unit(rng.normal(size=(n_detail, 3)))
    points = direction * rng.uniform(2.4, 6.5, (n_detail, 1))
    log_scales = np.log(0.03) + rng.normal(0, 0.4, (n_detail, 3))
    rgb = rng.uniform(0.2, 1.0, (n_detail, 3))
    rot = _tangent_frame(_unit(rng.normal(size=(n_detail, 3))), rng)
    sh = np.concatenate([rgb_to_sh0(rgb)[:, None], _sh_rest(direction, n_detail, rng, 0.0)], 1)
    parts.append((points, rot, log_scales, rng.normal(-0.5, 1.5, n_detail), sh))

    means, rots, scales, opac, shs = (np.concatenate(x) for x in zip(*parts))
    order = rng.permutation(count)  # real captures are not sorted by part
    return GaussianSet(means=means[order], quats=normalize_quats(rotmat_to_quat(rots[order]).astype(np.float32)),
                       scales=scales[order], opacities=opac[order], sh=shs[order],
                       meta={"source": f"make_scene(count={count}, seed={seed})"})


def make_cameras(n: int = 24, width: int = 640, height: int = 480, fov_deg: float = 50.0,
                 distance: float = 5.2) -> list:
    """INRIA ``cameras.json`` entries: ``n`` views inside the shell orbiting the object at three
    elevations, looking at the origin, -y up (camera-to-world rotation columns = camera x, y, z)."""
    fy = 0.5 * height / np.tan(np.radians(fov_deg) / 2)
    cams = []
    for i in range(n):
        az = 2 * np.pi * i / n
        el = np.radians((20.0, 40.0, 5.0)[i % 3])
        pos = distance * np.array([np.cos(el) * np.cos(az), -np.sin(el), np.cos(el) * np.sin(az)])
        z = _unit(-pos)                                  # forward, towards the origin
        x = _unit(np.cross(z, np.array([0.0, -1.0, 0.0])))  # right (image x); world up is -y
        y = np.cross(z, x)                               # image y points down
        cams.append({"id": i, "img_name": f"view_{i:03d}", "width": width, "height": height,
                     "position": pos.tolist(), "rotation": np.stack([x, y, z], 1).tolist(),
                     "fx": float(fy), "fy": float(fy)})
    return cams


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="PLY file to write")
    ap.add_argument("--count", type=int, default=120000, help="number of Gaussians (default 120000)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--no-cameras", action="store_true", help="do not write cameras.json next to the PLY")
    args = ap.parse_args(argv)
    if args.count < 100:
        ap.error("--count must be at least 100")
    t0 = time.perf_counter()
    gs = make_scene(args.count, args.seed)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_ply(gs, args.output)
    if not args.no_cameras:
        (Path(args.output).parent / "cameras.json").write_text(json.dumps(make_cameras(), indent=1))
    print(f"wrote {args.output}: {len(gs)} Gaussians, SH degree {gs.sh_degree}, "
          f"{Path(args.output).stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
