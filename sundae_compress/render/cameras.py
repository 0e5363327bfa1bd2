"""Camera sets: loading (INRIA ``cameras.json``, nerfstudio/instant-ngp ``transforms.json``),
generating orbit views that frame a scene, and a deterministic train/held-out split."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import SundaeError
from .camera import Camera, look_at

_AXES = {"x": 0, "y": 1, "z": 2}


# -- loading ---------------------------------------------------------------------------------
def load_cameras(path: Union[str, Path]) -> List[Camera]:
    """Cameras from an INRIA 3DGS ``cameras.json`` or a nerfstudio/instant-ngp ``transforms.json``
    (detected from the content). Raises SundaeError with a one-line message on bad input."""
    path = Path(path)
    if path.is_dir():
        for name in ("cameras.json", "transforms.json", "transforms_train.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise SundaeError(f"{path}: no cameras.json or transforms.json in this folder")
    if not path.is_file():
        raise SundaeError(f"{path}: camera file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SundaeError(f"{path}: not a readable JSON camera file ({str(e).splitlines()[0]})") from None
    try:
        if isinstance(data, list):
            cams = [_inria_camera(d, i) for i, d in enumerate(data)]
        elif isinstance(data, dict) and "frames" in data:
            cams = _transforms_cameras(data)
        else:
            raise ValueError("expected a cameras.json list or a transforms.json object with 'frames'")
    except (KeyError, TypeError, ValueError, IndexError) as e:
        msg = f"missing field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise SundaeError(f"{path}: invalid camera file: {msg}") from None
    if not cams:
        raise SundaeError(f"{path}: the camera file has no cameras")
    return cams


def _inria_camera(d: dict, i: int) -> Camera:
    R = np.asarray(d["rotation"], np.float64).reshape(3, 3)   # camera-to-world, columns = axes
    pos = np.asarray(d["position"], np.float64).reshape(3)
    v = np.eye(4)
    v[:3, :3] = R.T
    v[:3, 3] = -R.T @ pos
    w, h = int(d["width"]), int(d["height"])
    fx, fy = float(d["fx"]), float(d["fy"])
    if not (w > 0 and h > 0 and fx > 0 and fy > 0 and np.isfinite(v).all()):
        raise ValueError(f"camera {i}: bad size, focal length or pose")
    name = str(d.get("img_name", d.get("id", i)))
    return Camera(v, fx, fy, float(d.get("cx", w / 2)), float(d.get("cy", h / 2)), w, h, name)


def _transforms_cameras(data: dict) -> List[Camera]:
    cams = []
    for i, fr in enumerate(data["frames"]):
        g = {**data, **fr}  # per-frame values override the file-level ones
        c2w = np.asarray(fr["transform_matrix"], np.float64)
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0, 0, 0, 1]])
        if c2w.shape != (4, 4):
            raise ValueError(f"frame {i}: transform_matrix must be 4x4")
        c2w = c2w.copy()
        c2w[:3, 1:3] *= -1  # OpenGL (y up, z back) -> OpenCV (y down, z forward)
        w = int(g.get("w", g.get("width", 0)))
        h = int(g.get("h", g.get("height", 0)))
        if "fl_x" in g:
            fx = float(g["fl_x"])
            fy = float(g.get("fl_y", fx))
        elif "camera_angle_x" in g:
            fx = 0.5 * w / math.tan(0.5 * float(g["camera_angle_x"]))
            fy = 0.5 * h / math.tan(0.5 * float(g["camera_angle_y"])) if "camera_angle_y" in g else fx
        else:
            raise ValueError(f"frame {i}: no focal length (fl_x or camera_angle_x)")
        if not (w > 0 and h > 0 and fx > 0 and fy > 0 and np.isfinite(c2w).all()):
            raise ValueError(f"frame {i}: bad size, focal length or pose")
        name = Path(str(fr.get("file_path", f"frame_{i:04d}"))).stem
        cams.append(Camera(np.linalg.inv(c2w), fx, fy, float(g.get("cx", w / 2)), float(g.get("cy", h / 2)),
                           w, h, name))
    return cams


# -- generation ------------------------------------------------------------------------------
def parse_up(up) -> np.ndarray:
    """'+y', '-z', 'y' or a 3-vector -> unit vector."""
    if isinstance(up, str):
        s = up.strip().lower()
        sign = -1.0 if s.startswith("-") else 1.0
        ax = s.lstrip("+-")
        if ax not in _AXES:
            raise SundaeError(f"invalid up axis {up!r} (use +x, -y, +z, ...)")
        v = np.zeros(3)
        v[_AXES[ax]] = sign
        return v
    v = np.asarray(up, np.float64).reshape(3)
    n = np.linalg.norm(v)
    if not n > 0:
        raise SundaeError(f"invalid up vector {up!r}")
    return v / n


def _content_points(gs, max_points: int = 200_000) -> np.ndarray:
    """Centres of the Gaussians that make up the visible content: finite, not nearly transparent,
    not huge, subsampled deterministically."""
    m = np.asarray(gs.means, np.float64)
    ok = np.isfinite(m).all(1)
    if hasattr(gs, "opacities"):
        ok &= np.asarray(gs.opacities) > -2.0  # sigmoid > ~0.12
    if ok.sum() < 100:
        ok = np.isfinite(m).all(1)
    m = m[ok]
    if len(m) > max_points:
        m = m[np.linspace(0, len(m) - 1, max_points).astype(np.int64)]
    return m


def robust_bounds(points: np.ndarray, lo: float = 2.0, hi: float = 98.0):
    """(centre, lower corner, upper corner) from per-axis percentiles (ignores floaters)."""
    a = np.percentile(points, lo, axis=0)
    b = np.percentile(points, hi, axis=0)
    return (a + b) / 2, a, b


def detect_up(gs) -> np.ndarray:
    """Guess the world 'up' direction of a scene (a signed coordinate axis).

    Axis: for flat content (smallest robust extent < 0.6x the middle one) the thin axis, i.e.
    the normal of the plane; otherwise y (COLMAP-made 3DGS scenes are y-down by convention).
    Sign: if one end of that axis holds a floor (> 40% of the content in the outer eighth of
    the range), that end is the bottom. Otherwise, for flat content the denser half faces up
    (captures see the top of a lying object far more than its underside); for the y default,
    the COLMAP prior holds: up is -y.
    """
    pts = _content_points(gs)
    _, a, b = robust_bounds(pts)
    ext = b - a
    order = np.argsort(ext)
    flat = ext[order[0]] < 0.6 * ext[order[1]]
    axis = int(order[0]) if flat else 1
    v = pts[:, axis]
    lo, hi = np.percentile(v, [2, 98])
    v = v[(v >= lo) & (v <= hi)]
    up = np.zeros(3)
    if len(v) == 0 or hi <= lo:
        up[axis] = -1.0 if axis == 1 else 1.0
        return up
    hist = np.histogram(v, bins=8, range=(lo, hi))[0] / len(v)
    if max(hist[0], hist[-1]) > 0.4:          # a floor at one end: that end is down
        up[axis] = 1.0 if hist[0] > hist[-1] else -1.0
    elif flat:                                 # the denser half is the (well-captured) top
        up[axis] = 1.0 if hist[4:].sum() > hist[:4].sum() else -1.0
    else:
        up[axis] = -1.0
    return up


def _perp_basis(up: np.ndarray):
    helper = np.eye(3)[np.argmin(np.abs(up))]
    e1 = np.cross(up, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    return e1, e2


def generate_cameras(gs, n: int = 24, width: int = 640, height: int = 480, up=None, seed: int = 0,
                     fov_deg: float = 50.0, elevations: Sequence[float] = (15.0, 35.0, -5.0),
                     distances: Sequence[float] = (1.0, 0.85, 1.15), margin: float = 1.1) -> List[Camera]:
    """``n`` orbit cameras around the content of ``gs`` (a GaussianSet or anything with
    ``means``/``opacities``), looking at its robust centre, at several elevations and distances,
    with a field of view (vertical ``fov_deg``) and distance that frame the content.
    ``up``: None (detect), '+y', '-y', '+z', ... or a vector. Deterministic for a given seed."""
    if n < 1:
        raise SundaeError("number of cameras must be >= 1")
    pts = _content_points(gs)
    if len(pts) == 0:
        raise SundaeError("cannot place cameras: the scene has no finite Gaussians")
    upv = detect_up(gs) if up is None else parse_up(up)
    ctr, a, b = robust_bounds(pts)
    # radius of the content seen from the centre: a high percentile of distances
    d = np.linalg.norm(pts - ctr, axis=1)
    radius = max(float(np.percentile(d, 95)), 1e-6)
    fy = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
    half = math.radians(fov_deg) / 2 * min(1.0, width / height)
    dist0 = margin * radius / math.sin(half)
    e1, e2 = _perp_basis(upv)
    rng = np.random.default_rng(seed)
    phase = float(rng.uniform(0, 2 * math.pi))
    cams = []
    for i in range(n):
        az = phase + 2 * math.pi * i / n
        el = math.radians(elevations[i % len(elevations)])
        dist = dist0 * distances[(i // len(elevations)) % len(distances)] if len(elevations) else dist0
        direction = math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * upv
        pos = ctr + dist * direction
        v = look_at(pos, ctr, upv)
        cams.append(Camera(v, fy, fy, width / 2, height / 2, width, height, f"orbit_{i:03d}"))
    return cams


# -- view distributions: what fine-tuning samples, and what evaluation holds out ----------------
#
# Every view below is placed in a scene *frame*: the robust centre of the content, its radius (95th
# percentile of the content's distance to the centre, as :func:`generate_cameras` uses), the detected
# up axis and two horizontal axes. A view's *direction* is (camera position - centre) / distance.
#
# Disjoint by construction: the novel views (:func:`novel_views`) sit on NOVEL_TABLE's directions at
# NOVEL_SIZE; the training sampler (:class:`ViewSampler`) rejects every camera whose direction lies
# within EXCLUSION_DEG of any of those directions, and draws image widths from TRAIN_WIDTHS, which
# stop below NOVEL_SIZE's width. So no training camera ever has a novel view's direction or size.

#: (elevation above the horizon in degrees, azimuth in degrees, distance / content radius) of the
#: novel views: from below the horizon to nearly overhead, from close-up to far.
NOVEL_TABLE = ((-30.0, 15.0, 2.4), (-15.0, 75.0, 1.6), (-5.0, 140.0, 3.2), (5.0, 200.0, 2.0),
               (15.0, 260.0, 1.4), (25.0, 320.0, 2.8), (35.0, 30.0, 1.8), (45.0, 100.0, 3.6),
               (55.0, 170.0, 2.2), (65.0, 230.0, 1.5), (75.0, 290.0, 3.0), (85.0, 350.0, 2.5))
#: novel views' image size: wider than anything the trainer renders
NOVEL_SIZE = (480, 360)
#: half-angle of the cone around each novel direction that the trainer never samples
EXCLUSION_DEG = 8.0
#: training image widths (inclusive) and aspect ratios (width / height)
TRAIN_WIDTHS = (160, 400)
TRAIN_ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4)
#: training distances, as multiples of the content radius (log-uniform)
TRAIN_DISTANCES = (1.2, 4.0)
#: base vertical field of view, and the range of focal-length factors applied to it
BASE_FOV_DEG = 50.0
TRAIN_FOCAL = (0.8, 1.6)
#: a camera-defined frame's radius is the cameras' median distance to its centre over this (the
#: middle of the training distances, so generated views range closer and farther than the capture)
CAMERA_DISTANCE_IN_RADII = 2.5
#: draws around real cameras interpolate between a camera and one of this many nearest cameras
REAL_NEIGHBOURS = 3
#: seed of the near-training evaluation views (the trainer's own draws use the caller's seed)
NEAR_VIEW_SEED = 987_654_321


@dataclass(frozen=True)
class ViewFrame:
    """Where a scene's content is: centre, radius, up axis and two horizontal axes."""

    centre: np.ndarray
    radius: float
    up: np.ndarray
    e1: np.ndarray
    e2: np.ndarray

    @classmethod
    def of(cls, gs, up=None, cameras: Optional[Sequence[Camera]] = None) -> "ViewFrame":
        """The frame of a scene: from its real ``cameras`` when they surround a point they all
        look at (:func:`camera_frame`), else from its content (robust centre, 95th-percentile
        radius, detected up axis)."""
        pts = _content_points(gs)
        if len(pts) == 0:
            raise SundaeError("cannot place cameras: the scene has no finite Gaussians")
        found = camera_frame(cameras, up) if cameras else None
        if found is not None:
            return found
        upv = detect_up(gs) if up is None else parse_up(up)
        ctr, _, _ = robust_bounds(pts)
        radius = max(float(np.percentile(np.linalg.norm(pts - ctr, axis=1), 95)), 1e-6)
        e1, e2 = _perp_basis(upv)
        return cls(ctr, radius, upv, e1, e2)

    def direction(self, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
        el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
        return math.cos(el) * (math.cos(az) * self.e1 + math.sin(az) * self.e2) + math.sin(el) * self.up

    def elevation(self, direction: np.ndarray) -> float:
        d = np.asarray(direction, np.float64)
        return math.degrees(math.asin(float(np.clip(d @ self.up / np.linalg.norm(d), -1, 1))))

    def camera(self, direction, distance: float, width: int, height: int, focal: float = 1.0,
               target=None, name: str = "") -> Camera:
        """A pinhole camera at ``centre + distance * radius * direction`` looking at ``target``
        (default the centre), vertical field of view BASE_FOV_DEG shrunk by ``focal``."""
        pos = self.centre + float(distance) * self.radius * np.asarray(direction, np.float64)
        fy = focal * 0.5 * height / math.tan(math.radians(BASE_FOV_DEG) / 2)
        v = look_at(pos, self.centre if target is None else target, self.up)
        return Camera(v, fy, fy, width / 2, height / 2, width, height, name)

    def view_direction(self, cam: Camera) -> np.ndarray:
        d = cam.position - self.centre
        n = np.linalg.norm(d)
        return d / n if n > 0 else self.up.copy()


def camera_frame(cameras: Sequence[Camera], up=None) -> Optional[ViewFrame]:
    """The frame a capture's cameras define, or None when they do not surround one point.

    Centre: the point closest (least squares) to all optical axes; it must lie in front of at least
    3/4 of the cameras, and the cameras must be spread around it (mean resultant length of their
    directions from it < 0.9). Radius: the median camera distance / CAMERA_DISTANCE_IN_RADII, so
    generated views (1.2-4 radii) range from well inside to beyond the capture's distance. Up: ``up``
    if given, else the cameras' mean up vector (None when they disagree). Why: a content-based
    frame of a scene with a far background (a room, a sky shell) puts every generated view outside
    that background, where nothing the capture shows can be seen."""
    cams = list(cameras or [])
    if len(cams) < 3:
        return None
    pos = np.stack([c.position for c in cams])
    fwd = np.stack([c.forward / max(np.linalg.norm(c.forward), 1e-12) for c in cams])
    proj = np.eye(3)[None] - fwd[:, :, None] * fwd[:, None, :]
    A, b = proj.sum(0), np.einsum("nij,nj->i", proj, pos)
    if np.linalg.cond(A) > 1e6:
        return None
    ctr = np.linalg.solve(A, b)
    rel = ctr[None] - pos
    dist = np.linalg.norm(rel, axis=1)
    if np.mean(np.einsum("ni,ni->n", rel, fwd) > 0) < 0.75 or not np.all(dist > 0):
        return None
    spread = np.linalg.norm((-rel / dist[:, None]).mean(0))
    if spread > 0.9:
        return None
    if up is None:
        ups = -np.stack([c.rotation[1] for c in cams])   # camera y points down in the image
        m = ups.mean(0)
        if np.linalg.norm(m) < 0.5:
            return None
        upv = m / np.linalg.norm(m)
    else:
        upv = parse_up(up)
    e1, e2 = _perp_basis(upv)
    return ViewFrame(ctr, float(np.median(dist)) / CAMERA_DISTANCE_IN_RADII, upv, e1, e2)


def novel_directions(frame: ViewFrame) -> np.ndarray:
    """(len(NOVEL_TABLE), 3) unit directions of the novel views."""
    return np.stack([frame.direction(el, az) for el, az, _ in NOVEL_TABLE])


def novel_views(gs_or_frame, size=NOVEL_SIZE, n: Optional[int] = None, up=None) -> List[Camera]:
    """The deterministic novel views (NOVEL_TABLE at ``size``): never sampled by the trainer."""
    frame = gs_or_frame if isinstance(gs_or_frame, ViewFrame) else ViewFrame.of(gs_or_frame, up)
    w, h = int(size[0]), int(size[1])
    rows = NOVEL_TABLE[:n] if n else NOVEL_TABLE
    return [frame.camera(frame.direction(el, az), dist, w, h, name=f"novel_el{el:+.0f}_az{az:.0f}_d{dist:g}")
            for el, az, dist in rows]


def _nearest_cameras(cameras: Sequence[Camera], k: int) -> List[np.ndarray]:
    """For each camera, the indices of its ``k`` nearest cameras by position (itself when alone)."""
    if len(cameras) < 2:
        return [np.zeros(1, np.int64) for _ in cameras]
    pos = np.stack([c.position for c in cameras])
    d = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return list(np.argsort(d, axis=1, kind="stable")[:, :min(k, len(cameras) - 1)])


class ViewSampler:
    """Training cameras drawn from a distribution, a fresh one per call to :meth:`sample`.

    Sphere draws: a uniformly random direction (the whole sphere), a distance log-uniform in
    TRAIN_DISTANCES x radius, a focal-length factor in TRAIN_FOCAL, a width in TRAIN_WIDTHS with a
    random aspect from TRAIN_ASPECTS, and an aim point jittered around the centre (``aim_jitter`` x
    radius, Gaussian). With ``cameras`` (a scene's real views), a share ``real_share`` of the draws
    sit around them instead: a random point between a camera and one of its REAL_NEIGHBOURS nearest
    cameras (positions interpolated, viewing directions blended), jittered in position and
    direction, at their field of view: in-between poses along the capture path, never a blend of
    cameras on opposite sides (which would sit inside the content). Any draw whose direction falls
    within EXCLUSION_DEG of a novel view's is rejected and drawn again.
    """

    def __init__(self, frame: ViewFrame, *, cameras: Optional[Sequence[Camera]] = None, seed: int = 0,
                 widths=TRAIN_WIDTHS, distances=TRAIN_DISTANCES, focal=TRAIN_FOCAL, aim_jitter: float = 0.15,
                 real_share: float = 0.5):
        self.frame = frame
        self.cameras = list(cameras or [])
        self.rng = np.random.default_rng(seed)
        self.widths = (int(widths[0]), int(widths[1]))
        if self.widths[0] < 8 or self.widths[0] > self.widths[1]:
            raise SundaeError(f"training widths must be 8 <= min <= max, got {widths}")
        self.distances = (float(distances[0]), float(distances[1]))
        self.focal = (float(focal[0]), float(focal[1]))
        self.aim_jitter = float(aim_jitter)
        self.real_share = float(real_share) if self.cameras else 0.0
        self._neighbours = _nearest_cameras(self.cameras, REAL_NEIGHBOURS)
        self._novel = novel_directions(frame)
        self._cos_excl = math.cos(math.radians(EXCLUSION_DEG))
        self.rejected = 0

    def excluded(self, cam: Camera) -> bool:
        """True when ``cam``'s direction lies in a novel view's exclusion cone."""
        return bool((self._novel @ self.frame.view_direction(cam)).max() >= self._cos_excl)

    def _size(self, aspect=None):
        w = int(self.rng.integers(self.widths[0], self.widths[1] + 1))
        a = aspect or float(self.rng.choice(TRAIN_ASPECTS))
        return w, max(8, int(round(w / a)))

    def _sphere(self, name, size=None) -> Camera:
        d = self.rng.normal(size=3)
        d /= max(np.linalg.norm(d), 1e-12)
        lo, hi = np.log(self.distances)
        dist = float(np.exp(self.rng.uniform(lo, hi)))
        f = float(self.rng.uniform(*self.focal))
        w, h = size or self._size()
        target = self.frame.centre + self.rng.normal(size=3) * self.aim_jitter * self.frame.radius
        if np.linalg.norm(target - self.frame.centre) > dist * self.frame.radius * 0.8:
            target = self.frame.centre
        return self.frame.camera(d, dist, w, h, focal=f, target=target, name=name)

    def _around_real(self, name) -> Camera:
        i = int(self.rng.integers(len(self.cameras)))
        a = self.cameras[i]
        b = self.cameras[int(self.rng.choice(self._neighbours[i]))]
        t = float(self.rng.uniform(0, 1))
        r = self.frame.radius
        pos = (1 - t) * a.position + t * b.position + self.rng.normal(size=3) * 0.05 * r
        fwd = (1 - t) * a.forward + t * b.forward
        fwd = fwd / max(np.linalg.norm(fwd), 1e-12) + self.rng.normal(size=3) * 0.05
        down = (1 - t) * a.rotation[1] + t * b.rotation[1]
        v = look_at(pos, pos + fwd, -down)
        w, h = self._size(aspect=a.width / a.height)
        s = w / a.width
        return Camera(v, a.fx * s, a.fy * s, w / 2, h / 2, w, h, name)

    def _draws(self, n: int) -> List[Camera]:
        """``n`` consecutive draws (tests, inspection)."""
        return [self.sample() for _ in range(n)]

    def sample(self) -> Camera:
        for _ in range(1000):
            real = self.real_share > 0 and self.rng.uniform() < self.real_share
            cam = self._around_real("around_real") if real else self._sphere("sphere")
            if not self.excluded(cam):
                return cam
            self.rejected += 1
        raise SundaeError("view sampler: every draw fell into the novel views' exclusion cones")


def near_views(gs_or_frame, n: int = 6, size=(320, 240), up=None) -> List[Camera]:
    """``n`` views drawn from the training distribution (sphere draws, NEAR_VIEW_SEED) at ``size``:
    views like those the trainer learns from, never the same ones (a different random stream)."""
    frame = gs_or_frame if isinstance(gs_or_frame, ViewFrame) else ViewFrame.of(gs_or_frame, up)
    s = ViewSampler(frame, seed=NEAR_VIEW_SEED)
    out: List[Camera] = []
    while len(out) < n:
        cam = s._sphere(f"near_{len(out):02d}", size=(int(size[0]), int(size[1])))
        if not s.excluded(cam):
            out.append(cam)
    return out


def split_views(cameras: Sequence[Camera], holdout_every: int = 8) -> Tuple[List[Camera], List[Camera]]:
    """Deterministic split: every ``holdout_every``-th view (0, k, 2k, ...) is held out for testing
    (the INRIA/mip-NeRF 360 convention); at least one test view, and at least one train view
    when there are two or more cameras."""
    cams = list(cameras)
    if not cams:
        return [], []
    k = max(int(holdout_every), 1)
    test_idx = set(range(0, len(cams), k)) if k > 1 else {0}
    if len(test_idx) == len(cams) and len(cams) > 1:
        test_idx = {0}
    train = [c for i, c in enumerate(cams) if i not in test_idx]
    test = [c for i, c in enumerate(cams) if i in test_idx]
    return train, test
