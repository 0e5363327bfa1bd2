"""Pruning: choose which Gaussians to keep (spectral band-stop sampling and simpler selectors).

:mod:`.graph` builds the thresholded kNN graph on the centres and scores every Gaussian by its
graph-Laplacian high-pass response; :mod:`.select` turns a budget into kept indices.
"""

from .graph import (DEFAULT_K, THRESHOLD_FACTOR, KnnGraph, kernel_available, knn_graph, knn_graph_reference,
                    spectral_scores, spectral_scores_reference)
from .select import DEFAULT_GAMMA, SELECTORS, band_stop, resolve_budget, select

__all__ = [
    "DEFAULT_K", "THRESHOLD_FACTOR", "KnnGraph", "kernel_available", "knn_graph", "knn_graph_reference",
    "spectral_scores", "spectral_scores_reference", "DEFAULT_GAMMA", "SELECTORS", "band_stop",
    "resolve_budget", "select",
]
