"""The :class:`Camera` type: a pinhole camera in the OpenCV convention.

x points right, y down, z forward (into the scene); ``viewmat`` maps world to camera
coordinates (4x4, float64). Intrinsics are in pixels; pixel centres sit at ``i + 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Camera:
    viewmat: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    name: str = ""

    def __post_init__(self):
        self.viewmat = np.asarray(self.viewmat, dtype=np.float64).reshape(4, 4)
        self.fx, self.fy, self.cx, self.cy = (float(v) for v in (self.fx, self.fy, self.cx, self.cy))
        self.width, self.height = int(self.width), int(self.height)

    @property
    def rotation(self) -> np.ndarray:
        """World-to-camera rotation (3, 3)."""
        return self.viewmat[:3, :3]

    @property
    def translation(self) -> np.ndarray:
        return self.viewmat[:3, 3]

    @property
    def position(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.rotation.T @ self.translation

    @property
    def forward(self) -> np.ndarray:
        """Viewing direction (camera +z) in world coordinates."""
        return self.rotation[2].copy()

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def scaled(self, width: int, height: int) -> "Camera":
        """The same view at another resolution (intrinsics scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.viewmat.copy(), self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                      int(width), int(height), self.name)

    def project(self, points: np.ndarray):
        """World points (N, 3) -> (pixel xy (N, 2), depth z (N,))."""
        p = np.asarray(points, np.float64) @ self.rotation.T + self.translation
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * p[:, 0] / z + self.cx, self.fy * p[:, 1] / z + self.cy], 1)
        return uv, z


def look_at(position, target, up) -> np.ndarray:
    """World-to-camera 4x4 for a camera at ``position`` looking at ``target``; ``up`` is the world
    direction that should appear upwards in the image (camera -y)."""
    position, target, up = (np.asarray(v, np.float64) for v in (position, target, up))
    f = target - position
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-9:  # looking straight along up: pick any perpendicular
        alt = np.eye(3)[np.argmin(np.abs(f))]
        r = np.cross(f, alt)
    r /= np.linalg.norm(r)
    d = np.cross(f, r)  # camera y (down)
    v = np.eye(4)
    v[:3, :3] = np.stack([r, d, f])
    v[:3, 3] = -v[:3, :3] @ position
    return v
