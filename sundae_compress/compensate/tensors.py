""":class:`TorchGaussians`: the trainer's Gaussians as torch tensors, mirroring
:class:`~sundae_compress.gaussians.GaussianSet` (features included). SH is split into the DC
band and the rest so they get separate learning rates. Conversions happen only here."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from ..gaussians import GaussianSet


class TorchGaussians:
    FIELDS = ("means", "quats", "scales", "opacities", "sh_dc", "sh_rest", "features")

    def __init__(self, means, quats, scales, opacities, sh_dc, sh_rest=None, features=None):
        self.means, self.quats, self.scales, self.opacities = means, quats, scales, opacities
        self.sh_dc, self.sh_rest, self.features = sh_dc, sh_rest, features

    @classmethod
    def from_set(cls, gs: GaussianSet, num_features: int = 0, device="cpu",
                 trainable: bool = True) -> "TorchGaussians":
        """Copy ``gs`` to ``device``; ``num_features`` channels (gs's own when it has K of them,
        else zeros); leaf tensors with gradients when ``trainable``."""
        t = gs.to_torch(device=device)
        k = int(num_features)
        feats = None
        if k > 0:
            feats = t["features"] if gs.num_features == k else torch.zeros(len(gs), k, device=device)
        sh = t["sh"]
        out = cls(t["means"], t["quats"], t["scales"], t["opacities"], sh[:, :1],
                  sh[:, 1:] if sh.shape[1] > 1 else None, feats)
        for name in cls.FIELDS:
            v = getattr(out, name)
            if v is not None:
                setattr(out, name, v.clone().requires_grad_(trainable))
        return out

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh(self) -> torch.Tensor:
        return self.sh_dc if self.sh_rest is None else torch.cat([self.sh_dc, self.sh_rest], 1)

    def render_input(self) -> Dict[str, torch.Tensor]:
        """The dict the renderer takes (features passed separately via ``.features``)."""
        return {"means": self.means, "quats": self.quats, "scales": self.scales,
                "opacities": self.opacities, "sh": self.sh}

    def detached(self) -> "TorchGaussians":
        return TorchGaussians(*(None if getattr(self, n) is None else getattr(self, n).detach()
                                for n in self.FIELDS))

    def plus(self, offsets: "TorchGaussians") -> "TorchGaussians":
        """Field-wise ``self + offsets`` (straight-through quantisation)."""
        return TorchGaussians(*(None if getattr(self, n) is None else getattr(self, n) + getattr(offsets, n)
                                for n in self.FIELDS))

    def minus(self, other: "TorchGaussians") -> "TorchGaussians":
        return TorchGaussians(*(None if getattr(self, n) is None else
                                getattr(self, n).detach() - getattr(other, n).detach() for n in self.FIELDS))

    def param_groups(self, lrs: Dict[str, float], extent: float) -> List[dict]:
        """Adam groups with the 3DGS learning rates (means scaled by the scene extent)."""
        groups = []
        for name in self.FIELDS:
            v = getattr(self, name)
            if v is not None:
                lr = lrs[name] * (extent if name == "means" else 1.0)
                groups.append({"params": [v], "lr": lr, "name": name})
        return groups

    @torch.no_grad()
    def normalise_quats(self) -> None:
        self.quats.copy_(torch.nn.functional.normalize(self.quats, dim=1))

    def to_set(self, meta: Optional[dict] = None) -> GaussianSet:
        return GaussianSet.from_torch({"means": self.means, "quats": self.quats, "scales": self.scales,
                                       "opacities": self.opacities, "sh": self.sh,
                                       "features": self.features}, meta=meta)
