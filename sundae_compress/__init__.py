"""sundae-compress: spectral pruning + neural compensation for 3D Gaussian Splatting scenes."""

import os as _os

# torch's OpenMP threads spin while they wait; on a small or shared CPU that made 2-thread renders
# 3-10x slower (benchmarks/results/render_speed.md). Must be set before torch is imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__
from .errors import BundleError, PlyError, SundaeError
from .gaussians import GaussianSet
from .api import CompressReport, compress, decompress, load_bundle, load_scene, prune_scene

__all__ = ["GaussianSet", "SundaeError", "PlyError", "BundleError", "CompressReport", "compress", "decompress",
           "load_bundle", "load_scene", "prune_scene", "__version__"]
