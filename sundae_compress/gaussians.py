"""The one type every stage takes and returns: :class:`GaussianSet`.

Storage is numpy, float32, one row per Gaussian, in the usual 3DGS parameterisation:

==============  ===========  ==============================================================
field           shape        meaning
==============  ===========  ==============================================================
``means``       (N, 3)       centres, world units
``quats``       (N, 4)       rotation quaternion (w, x, y, z), unit norm
``scales``      (N, 3)       log of the standard deviations along the local axes
``opacities``   (N,)         opacity logit (sigmoid gives alpha)
``sh``          (N, K, 3)    SH coefficients, K = (degree + 1)², ``sh[:, 0]`` is the DC term
``features``    (N, F)       optional extra learned channels (neural compensation), or None
==============  ===========  ==============================================================

Training code converts to torch tensors with :meth:`GaussianSet.to_torch` and back with
:meth:`GaussianSet.from_torch`; everything else works on the numpy arrays directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

SH_C0 = 0.28209479177387814

#: Number of SH coefficients per colour channel for each degree.
SH_COEFFS = {0: 1, 1: 4, 2: 9, 3: 16}


def sh_degree_for(k: int) -> int:
    """SH degree for ``k`` coefficients per channel (1, 4, 9 or 16)."""
    for deg, n in SH_COEFFS.items():
        if n == k:
            return deg
    raise ValueError(f"{k} SH coefficients per channel is not a valid SH degree")


def sigmoid(x) -> np.ndarray:
    """Logistic function (float64): opacity logit -> alpha."""
    with np.errstate(over="ignore"):  # a logit below -709 is alpha 0, not an overflow warning
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def logit(a, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Inverse of :func:`sigmoid` (float64) of ``a`` clipped to ``[lo, hi]``: alpha -> opacity logit."""
    a = np.clip(np.asarray(a, np.float64), lo, hi)
    return np.log(a / (1.0 - a))


def rgb_to_sh0(rgb):
    return (np.asarray(rgb, dtype=np.float32) - 0.5) / SH_C0


def sh0_to_rgb(sh0):
    return np.asarray(sh0, dtype=np.float32) * SH_C0 + 0.5


def normalize_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions; a zero-norm (or non-finite) quaternion becomes the identity."""
    q = np.asarray(q, dtype=np.float32)
    n = np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
    bad = ~(n[:, 0] > 1e-12) | ~np.isfinite(n[:, 0])
    # rows already of unit norm (to float32 precision) are kept bit-for-bit, so that normalising
    # twice, or reading back a file we wrote, gives exactly the same arrays
    unit = np.abs(n[:, 0] - 1.0) <= 1e-6
    out = np.where(unit[:, None], q, q / np.where(bad[:, None], 1.0, n)).astype(np.float32)
    out[bad] = np.array([1, 0, 0, 0], np.float32)
    return out


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """(N, 4) wxyz quaternions -> (N, 3, 3) rotation matrices (float64)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    r = np.empty((len(q), 3, 3))
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - w * z)
    r[:, 0, 2] = 2 * (x * z + w * y)
    r[:, 1, 0] = 2 * (x * y + w * z)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - w * x)
    r[:, 2, 0] = 2 * (x * z - w * y)
    r[:, 2, 1] = 2 * (y * z + w * x)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def rotmat_to_quat(r: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) unit wxyz quaternions with w >= 0 (float64)."""
    r = np.asarray(r, dtype=np.float64)
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    t = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], 1)
    pick = np.argmax(t, axis=1)
    q = np.empty((len(r), 4))
    s = np.sqrt(np.maximum(t[np.arange(len(r)), pick], 1e-20)) * 2
    for case in range(4):
        i = pick == case
        if not i.any():
            continue
        a = r[i]
        si = s[i]
        if case == 0:
            q[i] = np.stack([0.25 * si, (a[:, 2, 1] - a[:, 1, 2]) / si, (a[:, 0, 2] - a[:, 2, 0]) / si,
                             (a[:, 1, 0] - a[:, 0, 1]) / si], 1)
        elif case == 1:
            q[i] = np.stack([(a[:, 2, 1] - a[:, 1, 2]) / si, 0.25 * si, (a[:, 0, 1] + a[:, 1, 0]) / si,
                             (a[:, 0, 2] + a[:, 2, 0]) / si], 1)
        elif case == 2:
            q[i] = np.stack([(a[:, 0, 2] - a[:, 2, 0]) / si, (a[:, 0, 1] + a[:, 1, 0]) / si, 0.25 * si,
                             (a[:, 1, 2] + a[:, 2, 1]) / si], 1)
        else:
            q[i] = np.stack([(a[:, 1, 0] - a[:, 0, 1]) / si, (a[:, 0, 2] + a[:, 2, 0]) / si,
                             (a[:, 1, 2] + a[:, 2, 1]) / si, 0.25 * si], 1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q


@dataclass
class GaussianSet:
    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    sh: np.ndarray
    features: Optional[np.ndarray] = None
    #: free-form provenance (source path, dropped rows, ignored properties, ...)
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.means = np.ascontiguousarray(self.means, dtype=np.float32).reshape(-1, 3)
        n = len(self.means)
        self.quats = np.ascontiguousarray(self.quats, dtype=np.float32).reshape(n, 4)
        self.scales = np.ascontiguousarray(self.scales, dtype=np.float32).reshape(n, 3)
        self.opacities = np.ascontiguousarray(self.opacities, dtype=np.float32).reshape(n)
        sh = np.ascontiguousarray(self.sh, dtype=np.float32)
        if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3:
            raise ValueError(f"sh must have shape (N, K, 3), got {sh.shape} for N={n}")
        sh_degree_for(sh.shape[1])
        self.sh = sh
        if self.features is not None:
            self.features = np.ascontiguousarray(self.features, dtype=np.float32).reshape(n, -1)

    # -- basic facts -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return sh_degree_for(self.sh.shape[1])

    @property
    def num_features(self) -> int:
        return 0 if self.features is None else self.features.shape[1]

    @property
    def colors(self) -> np.ndarray:
        """Base (DC) colour in [0, 1]-ish RGB."""
        return sh0_to_rgb(self.sh[:, 0])

    @property
    def alphas(self) -> np.ndarray:
        return sigmoid(self.opacities).astype(np.float32)

    def bounds(self):
        if len(self) == 0:
            z = np.zeros(3, np.float32)
            return z, z
        return self.means.min(0), self.means.max(0)

    # -- derived sets ------------------------------------------------------------------------
    def _fields(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> "GaussianSet":
        d = self._fields()
        d["meta"] = dict(self.meta)
        d.update(changes)
        return GaussianSet(**d)

    def subset(self, index) -> "GaussianSet":
        """Rows picked by an index array or a boolean mask (a copy)."""
        index = np.asarray(index)
        return self.replace(
            means=self.means[index], quats=self.quats[index], scales=self.scales[index],
            opacities=self.opacities[index], sh=self.sh[index],
            features=None if self.features is None else self.features[index])

    @staticmethod
    def concat(sets) -> "GaussianSet":
        sets = list(sets)
        feats = None
        if all(s.features is not None for s in sets):
            feats = np.concatenate([s.features for s in sets])
        return GaussianSet(
            means=np.concatenate([s.means for s in sets]), quats=np.concatenate([s.quats for s in sets]),
            scales=np.concatenate([s.scales for s in sets]),
            opacities=np.concatenate([s.opacities for s in sets]),
            sh=np.concatenate([s.sh for s in sets]), features=feats, meta=dict(sets[0].meta))

    def finite_mask(self) -> np.ndarray:
        ok = np.isfinite(self.means).all(1) & np.isfinite(self.quats).all(1)
        ok &= np.isfinite(self.scales).all(1) & np.isfinite(self.opacities)
        ok &= np.isfinite(self.sh).all((1, 2))
        if self.features is not None:
            ok &= np.isfinite(self.features).all(1)
        return ok

    def covariances(self) -> np.ndarray:
        """(N, 3, 3) world covariances R S² Rᵀ (float64)."""
        r = quat_to_rotmat(self.quats)
        s2 = np.exp(2.0 * self.scales.astype(np.float64))
        return np.einsum("nij,nj,nkj->nik", r, s2, r)

    # -- torch bridge ------------------------------------------------------------------------
    def to_torch(self, device="cpu", dtype=None, requires_grad=False):
        """Dict of torch tensors: means, quats, scales, opacities, sh (N, K, 3), features or None."""
        import torch

        dtype = dtype or torch.float32
        out = {}
        for name in ("means", "quats", "scales", "opacities", "sh", "features"):
            a = getattr(self, name)
            if a is None:
                out[name] = None
                continue
            t = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
            if requires_grad:
                t.requires_grad_(True)
            out[name] = t
        return out

    @classmethod
    def from_torch(cls, params, meta=None) -> "GaussianSet":
        def arr(t):
            return None if t is None else t.detach().float().cpu().numpy()

        return cls(means=arr(params["means"]), quats=normalize_quats(arr(params["quats"])),
                   scales=arr(params["scales"]), opacities=arr(params["opacities"]), sh=arr(params["sh"]),
                   features=arr(params.get("features")), meta=dict(meta or {}))
