"""Fine-tuning options in one place: :class:`FinetuneConfig` (what to train, how long, on what)
and :class:`Hooks` (the pipeline stages the trainer calls but does not own)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from ..errors import SundaeError
from ..gaussians import GaussianSet

#: 3DGS-style Adam learning rates (means are multiplied by the scene extent).
DEFAULT_LRS: Dict[str, float] = {
    "means": 1.6e-4,
    "means_final": 1.6e-6,
    "sh_dc": 2.5e-3,
    "sh_rest": 2.5e-3 / 20,
    "opacities": 2.5e-2,
    "scales": 5e-3,
    "quats": 1e-3,
    "features": 2.5e-3,
    "net": 1e-3,
    "net_final": 1e-4,
}

#: per-device defaults: iterations, largest training image width (long side for photos),
#: net-only polish iterations (when a net is trained)
CPU_DEFAULTS = {"iterations": 400, "resolution": 400, "polish_iterations": 150}
GPU_DEFAULTS = {"iterations": 3000, "resolution": 800, "polish_iterations": 1000}
#: above this many Gaussians the teacher is rendered once into a pool of views that training
#: crops from (a teacher render of a 4.9 M scene costs ~8 s on 2 cores), below it every
#: iteration renders a fresh teacher view
TEACHER_POOL_ABOVE = 1_000_000
QUANTISE_MODES = ("decode", "ste", "none")


@dataclass
class FinetuneConfig:
    """Everything the trainer can be told. ``None`` fields take the device default at run time."""

    iterations: Optional[int] = None
    #: largest training image width (views are drawn from 0.4x..1x of it); photos: long side
    resolution: Optional[int] = None
    features: int = 0                      # K learned per-Gaussian channels (need the net)
    net: bool = False                      # train a CompensationNet (see README: off by default)
    net_width: int = 4
    net_levels: int = 4
    net_max_width: int = 8
    lrs: Dict[str, float] = field(default_factory=dict)
    ssim_weight: float = 0.2               # loss = (1 - w) L1 + w (1 - SSIM)
    seed: int = 0
    device: str = "auto"
    backend: str = "auto"
    threads: Optional[int] = None          # torch CPU threads for the run (restored afterwards)
    #: teacher targets: "fresh" (a new teacher render per iteration), "pool" (``pool_views``
    #: renders, randomly cropped per iteration) or "auto" (pool above TEACHER_POOL_ABOVE Gaussians)
    teacher: str = "auto"
    pool_views: int = 48
    real_share: float = 0.5                # share of draws around the scene's real cameras
    prune_schedule: Optional[str] = None   # "every=N,share=S": continuous pruning (needs target_count)
    target_count: Optional[int] = None
    quantise_aware: str = "decode"         # decode | ste | none
    polish_iterations: Optional[int] = None
    polish_views: int = 24
    ste_fraction: float = 0.3
    ste_refresh: int = 10
    eval_views: int = 4                    # near-training views scored into the history
    eval_every: Optional[int] = None       # None: at the start and the end only
    background: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    progress: bool = True
    #: cap on how much a Gaussian may grow: after every optimiser step each log-scale is clamped to
    #: at most its starting value + log(max_scale_growth) (None: no cap). Continuous pruning
    #: re-bases the cap on the Gaussians it keeps.
    max_scale_growth: Optional[float] = None
    #: global cap: no axis may exceed this quantile (0..1] of the ORIGINAL scene's per-Gaussian
    #: largest axis; larger ones (made by merging) are shrunk to it (0 or None: no cap). Default
    #: 0.999: without it the demo's detail blobs, merged into Gaussians 10x their size, became a
    #: translucent fog over the knot (benchmarks/results/worst_views.md, "scale cap")
    max_scale_quantile: Optional[float] = 0.999

    @classmethod
    def build(cls, config: Optional["FinetuneConfig"] = None, **overrides) -> "FinetuneConfig":
        """``config`` (or the defaults) with ``overrides`` applied; unknown names are an error."""
        base = config or cls()
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise SundaeError(f"unknown fine-tuning option(s): {', '.join(bad)}")
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def resolved(self, cuda: bool) -> "FinetuneConfig":
        """Device defaults filled in, options checked."""
        d = GPU_DEFAULTS if cuda else CPU_DEFAULTS
        c = dataclasses.replace(
            self, iterations=int(d["iterations"] if self.iterations is None else self.iterations),
            resolution=int(d["resolution"] if self.resolution is None else self.resolution),
            polish_iterations=int(d["polish_iterations"] if self.polish_iterations is None
                                  else self.polish_iterations),
            quantise_aware="none" if self.quantise_aware in (None, False) else self.quantise_aware,
            lrs={**DEFAULT_LRS, **(self.lrs or {})})
        if c.iterations < 0:
            raise SundaeError(f"iterations must be >= 0, got {c.iterations}")
        if c.resolution < 16:
            raise SundaeError(f"resolution must be >= 16 pixels, got {c.resolution}")
        if c.quantise_aware not in QUANTISE_MODES:
            raise SundaeError(f"quantise_aware must be one of {', '.join(QUANTISE_MODES)}, got {c.quantise_aware!r}")
        if int(c.features) < 0:
            raise SundaeError(f"features must be >= 0, got {c.features}")
        if c.features > 0 and not c.net:
            raise SundaeError("feature channels need the compensation net (features > 0 requires net)")
        if c.max_scale_growth is not None and not float(c.max_scale_growth) >= 1.0:
            raise SundaeError(f"max_scale_growth must be >= 1, got {c.max_scale_growth}")
        if c.max_scale_quantile is not None and not 0.0 <= float(c.max_scale_quantile) <= 1.0:
            raise SundaeError(f"max_scale_quantile must be in [0, 1] (0: no cap), got {c.max_scale_quantile}")
        if c.teacher not in ("auto", "fresh", "pool"):
            raise SundaeError(f"teacher must be auto, fresh or pool, got {c.teacher!r}")
        return c

    def train_widths(self) -> Tuple[int, int]:
        r = int(self.resolution)
        return max(16, int(round(0.4 * r))), r

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Hooks:
    """Pipeline stages the trainer calls without importing them (``api.py`` supplies them).

    * ``prune(gs, count) -> GaussianSet``: shrink to ``count`` (continuous pruning).
    * ``roundtrip(gs) -> GaussianSet``: what the bundle will hold, decode(encode(gs)), rows in
      ``gs``'s order (quantisation-aware polish and STE).
    """

    prune: Optional[Callable[[GaussianSet, int], GaussianSet]] = None
    roundtrip: Optional[Callable[[GaussianSet], GaussianSet]] = None
