"""sundae-compress: spectral pruning + neural compensation for 3D Gaussian Splatting scenes."""

from .errors import BundleError, PlyError, SundaeError
from .gaussians import GaussianSet

__version__ = "0.1.0"

__all__ = ["GaussianSet", "SundaeError", "PlyError", "BundleError", "__version__"]
