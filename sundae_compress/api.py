"""The importable pipeline: PLY → prune (+ merge) → optional fine-tune + net → ``.sundae``.

Each stage lives in its own package (``io``, ``prune``, ``compensate``, ``codec``); this module only
wires them together in reading order and keeps the report honest (counts, bytes, seconds per stage).

>>> from sundae_compress import compress
>>> report = compress("scene.ply", "scene.sundae", ratio=0.1, finetune=False)
>>> print(report.summary())
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import SundaeError
from .gaussians import GaussianSet
from .progress import info

#: ``merge="auto"``: pairwise edge collapse measured best at 10 % on every shared scene (guitar 33.87 dB
#: vs 32.88 for spectral selection + assignment; benchmarks/results/prune_quality.md) but costs ~6 µs
#: per Gaussian, mostly on one core (1 M: 5 s, 4.9 M: 30 s; benchmarks/results/merge_speed.md). Up to
#: this many Gaussians it stays under ~10 s; above it, spectral selection + assignment (4.9 M: ~7 s).
COLLAPSE_MAX_GAUSSIANS = 1_500_000


def resolve_merge(merge, n: int) -> Optional[str]:
    """``"auto"`` → ``"collapse"`` up to :data:`COLLAPSE_MAX_GAUSSIANS`, else ``"assign"``;
    None / "none" / False → no merging (selection only)."""
    if merge == "auto":
        return "collapse" if n <= COLLAPSE_MAX_GAUSSIANS else "assign"
    if merge in (None, "none", False):
        return None
    if merge not in ("assign", "collapse"):
        raise SundaeError(f"unknown merge mode {merge!r}; choose assign, collapse or none")
    return merge


@dataclass
class CompressReport:
    input: str
    output: str
    source_count: int = 0
    valid_count: int = 0
    kept_count: int = 0
    dropped_rows: int = 0
    ignored_properties: List[str] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    stages: Dict[str, float] = field(default_factory=dict)
    method: str = "spectral"
    merge: Optional[str] = None
    finetune: Dict[str, Any] = field(default_factory=dict)
    net_bytes: int = 0

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0

    def summary(self) -> str:
        return (f"{Path(self.input).name}: {self.valid_count:,} → {self.kept_count:,} Gaussians, "
                f"{self.bytes_in / 1e6:.2f} MB → {self.bytes_out / 1e6:.3f} MB "
                f"({self.ratio:.1f}x) in {self.seconds:.1f} s")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise SundaeError(f"{output} already exists (use --overwrite to replace it)")
    if output.exists() and output.is_dir():
        raise SundaeError(f"{output} is a directory, expected a file path for the bundle")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.exists():
        raise SundaeError(f"output folder {parent} does not exist")


def load_scene(path, *, strict: bool = False, sh_degree: Optional[int] = None) -> GaussianSet:
    """Read a PLY scene (see :func:`sundae_compress.io.ply.read_ply`)."""
    from .io.ply import read_ply

    return read_ply(path, strict=strict, sh_degree=sh_degree)


def prune_scene(gs: GaussianSet, *, ratio=None, count=None, method="spectral", gamma=0.5,
                merge: Optional[str] = "auto", seed: int = 0) -> GaussianSet:
    """Keep exactly the budget: select with ``method`` and fold the rest in (``merge``), or with
    ``merge="collapse"`` merge pairs until the budget is reached (the selector is then unused)."""
    from .prune.merge import prune
    from .prune.select import resolve_budget

    budget = resolve_budget(len(gs), ratio=ratio, count=count)
    return prune(gs, budget, method=method, gamma=gamma, merge=resolve_merge(merge, len(gs)), seed=seed)


def compress(input, output=None, *, ratio: Optional[float] = None, count: Optional[int] = None,
             gamma: float = 0.5, method: str = "spectral", merge: Optional[str] = "auto",
             finetune: bool = True, sh_degree: Optional[int] = None, strict: bool = False,
             overwrite: bool = False, settings=None, cameras=None, images=None,
             finetune_options: Optional[Dict[str, Any]] = None, seed: int = 0) -> CompressReport:
    """Compress one PLY scene into a ``.sundae`` bundle; returns a :class:`CompressReport`.

    ``ratio`` (0 < r ≤ 1) or ``count`` sets the number of Gaussians kept (default ratio 0.1).
    ``finetune`` distils the original scene into the pruned one and trains the compensation net.
    """
    from .io.bundle import write_bundle

    t0 = time.perf_counter()
    input = Path(input)
    output = Path(output) if output is not None else input.with_suffix(".sundae")
    _check_output(output, overwrite)
    if ratio is None and count is None:
        ratio = 0.1
    from .prune.select import resolve_budget

    resolve_budget(sys.maxsize, ratio=ratio, count=count)  # option errors before a long read
    report = CompressReport(input=str(input), output=str(output), method=method)

    t = time.perf_counter()
    gs = load_scene(input, strict=strict, sh_degree=sh_degree)
    report.stages["read"] = time.perf_counter() - t
    report.source_count = int(gs.meta.get("source_count", len(gs)))
    report.valid_count = len(gs)
    report.dropped_rows = int(gs.meta.get("dropped_rows", 0))
    report.ignored_properties = list(gs.meta.get("ignored_properties", []))
    report.bytes_in = int(gs.meta.get("source_bytes", os.path.getsize(input)))
    if report.dropped_rows:
        info(f"dropped {report.dropped_rows:,} rows with NaN/Inf values")
    if report.ignored_properties:
        info(f"ignored properties: {', '.join(report.ignored_properties)}")

    t = time.perf_counter()
    budget = resolve_budget(len(gs), ratio=ratio, count=count)
    report.merge = resolve_merge(merge, len(gs))
    net_bytes = None
    net_meta = None
    if finetune:
        from .compensate.train import finetune as run_finetune

        opts = dict(finetune_options or {})
        if cameras is None:  # a 3DGS output folder (or a generated example) ships its training views
            from .render.cameras import find_cameras_for, load_cameras

            found = find_cameras_for(input)
            if found is not None:
                info(f"using cameras from {found}")
                cameras = load_cameras(found)
        pruned = prune_scene(gs, count=budget, method=method, gamma=gamma, merge=report.merge, seed=seed) \
            if not opts.get("prune_schedule") else gs
        report.stages["prune"] = time.perf_counter() - t
        t = time.perf_counter()
        result = run_finetune(gs, pruned, cameras=cameras, images=images, seed=seed, codec_settings=settings,
                              target_count=budget, method=method, gamma=gamma, merge=report.merge, **opts)
        kept = result.gaussians
        report.finetune = result.summary()
        if result.net is not None:
            from .compensate.onnx_io import export_onnx

            net_bytes = export_onnx(result.net, half=True)  # fp16 weights: half the bytes, ~1e-5 difference
            net_meta = dict(result.net_meta(), params=result.net.num_params())
        report.stages["finetune"] = time.perf_counter() - t
    else:
        kept = prune_scene(gs, count=budget, method=method, gamma=gamma, merge=report.merge, seed=seed)
        report.stages["prune"] = time.perf_counter() - t
    report.kept_count = len(kept)

    t = time.perf_counter()
    bundle_info = {
        "source": {"file": input.name, "bytes": report.bytes_in, "count": report.source_count,
                   "valid": report.valid_count, "dropped_rows": report.dropped_rows},
        "pipeline": {"ratio": ratio, "count": budget,
                     "method": None if report.merge == "collapse" else method,  # collapse uses no selector
                     "gamma": gamma,
                     "merge": report.merge, "finetune": report.finetune or None},
    }
    write_bundle(output, kept, settings=settings, net=net_bytes, net_meta=net_meta, info=bundle_info)
    report.stages["write"] = time.perf_counter() - t
    report.bytes_out = os.path.getsize(output)
    report.net_bytes = len(net_bytes) if net_bytes else 0
    report.seconds = time.perf_counter() - t0
    return report


def load_bundle(path):
    """Read a ``.sundae`` bundle (see :func:`sundae_compress.io.bundle.read_bundle`)."""
    from .io.bundle import read_bundle

    return read_bundle(path)


def load_for_render(path):
    """A PLY or a ``.sundae`` bundle → ``(GaussianSet, postprocess)``, where ``postprocess`` maps a
    render to the final RGB through the bundle's compensation net (None when there is none)."""
    path = Path(path)
    if not path.exists():
        raise SundaeError(f"{path}: no such file")
    if path.suffix.lower() != ".sundae":
        return load_scene(path), None
    from .compensate import postprocess_from_bundle

    b = load_bundle(path)
    return b.gaussians, postprocess_from_bundle(b)


def decompress(bundle_path, output, *, overwrite: bool = False) -> GaussianSet:
    """Decode a bundle's Gaussians into a standard 3DGS PLY that any viewer opens."""
    from .io.ply import write_ply

    output = Path(output)
    _check_output(output, overwrite)
    gs = load_bundle(bundle_path).gaussians
    write_ply(gs.replace(features=None), output)
    return gs
