"""Where the training targets come from: a camera *distribution* and the teacher's renders.

* :class:`FreshTeacher` - every call draws a new camera from a
  :class:`~sundae_compress.render.cameras.ViewSampler` and renders the original scene (the teacher)
  for it: the default, measured best per second on the shared scenes (issue 11: a fixed pool of
  192 views saturates ~1.7 dB below fresh views on guitar).
* :class:`PoolTeacher` - for scenes whose teacher render is too slow to repeat every step: a pool of
  views is rendered once and every call returns a random crop of one of them, which is itself a
  pinhole camera (same centre, shifted principal point, narrower field of view).
* :class:`PhotoTargets` - training photos at their own cameras (``--images``).

Each ``next()`` returns ``(camera, target image (H, W, 3) in [0, 1])``.
"""

from __future__ import annotations

import time
from typing import Callable, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SundaeError
from ..progress import Progress
from ..render.camera import Camera


def crop_camera(cam: Camera, x0: int, y0: int, width: int, height: int) -> Camera:
    """The pinhole camera that sees exactly pixels [x0, x0+width) x [y0, y0+height) of ``cam``."""
    return Camera(cam.viewmat.copy(), cam.fx, cam.fy, cam.cx - x0, cam.cy - y0, int(width), int(height),
                  cam.name + "_crop")


class FreshTeacher:
    def __init__(self, teacher: Callable[[Camera], torch.Tensor], sampler):
        self.teacher, self.sampler = teacher, sampler
        self.renders, self.seconds = 0, 0.0

    def next(self):
        cam = self.sampler.sample()
        t = time.perf_counter()
        img = self.teacher(cam)
        self.seconds += time.perf_counter() - t
        self.renders += 1
        return cam, img


class PoolTeacher:
    def __init__(self, teacher: Callable[[Camera], torch.Tensor], sampler, views: int, seed: int = 0,
                 min_crop: float = 0.5, progress: bool = False):
        self.rng = np.random.default_rng(seed + 7)
        self.min_crop = float(min_crop)
        t = time.perf_counter()
        self.pool = []
        with Progress(int(views), "rendering teacher views", log_every=10, enabled=progress) as bar:
            for _ in range(max(int(views), 1)):
                cam = sampler.sample()
                self.pool.append((cam, teacher(cam)))
                bar.update()
        self.renders, self.seconds = len(self.pool), time.perf_counter() - t

    def next(self):
        cam, img = self.pool[int(self.rng.integers(len(self.pool)))]
        s = float(self.rng.uniform(self.min_crop, 1.0))
        w, h = max(8, int(round(cam.width * s))), max(8, int(round(cam.height * s)))
        x0 = int(self.rng.integers(0, cam.width - w + 1))
        y0 = int(self.rng.integers(0, cam.height - h + 1))
        return crop_camera(cam, x0, y0, w, h), img[y0:y0 + h, x0:x0 + w]


def photo_tensor(img, w: int, h: int, device) -> torch.Tensor:
    """Photo (H, W, 3 or 4; uint8 or float) -> float (h, w, 3) in [0, 1] on ``device``."""
    t = torch.as_tensor(np.asarray(img))
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if t.ndim != 3 or t.shape[2] < 3:
        raise SundaeError(f"training image must be (H, W, 3), got shape {tuple(t.shape)}")
    t = t[..., :3]
    if t.shape[0] != h or t.shape[1] != w:
        t = F.interpolate(t.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
    return t.clamp(0, 1).to(device)


class PhotoTargets:
    """Training photos at their cameras (scaled so the long side is ``resolution``), in a shuffled
    cycle."""

    def __init__(self, cameras: Sequence[Camera], photos, resolution: int, device, seed: int = 0):
        self.items: List = []
        for cam in cameras:
            s = min(1.0, resolution / max(cam.width, cam.height))
            c = cam.scaled(max(1, int(round(cam.width * s))), max(1, int(round(cam.height * s))))
            self.items.append((c, photo_tensor(photos[cam.name], c.width, c.height, device)))
        self.rng = np.random.default_rng(seed)
        self.order: List[int] = []
        self.renders, self.seconds = 0, 0.0

    def next(self):
        if not self.order:
            self.order = list(self.rng.permutation(len(self.items)))
        return self.items[int(self.order.pop())]
