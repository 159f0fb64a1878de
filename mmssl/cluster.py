"""k-means and PCA-whitening on feature matrices, backed by faiss (CPU): the one clustering helper of
the package. The clustering tasks (DeepCluster, XDC) label their pretraining split with it, and video
colorization fits its small colour palette with it.

faiss rather than hand-written torch: at Kinetics scale (hundreds of thousands of 256-d rows, k in
the hundreds) its k-means and PCA are multi-threaded BLAS with sub-sampling, and they are what the
DeepCluster reference code uses.

Example:
    >>> x = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    >>> result = kmeans(x, k=10, seed=0)
    >>> result.centroids.shape, result.assignments.shape
    ((10, 16), (1000,))
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray    # (k, dim) float32
    assignments: np.ndarray  # (n,) int64: the nearest centroid of each row


def kmeans(x: np.ndarray, k: int, *, seed: int, iterations: int = 20, redo: int = 1,
           max_points_per_centroid: int = 256) -> KMeansResult:
    """Lloyd's k-means of the rows of `x` (n, dim) into `k` clusters, deterministic for `seed`.

    faiss re-seeds an empty cluster by splitting a large one, so every centroid is used when n >= k.
    Past `max_points_per_centroid` x k rows, the centroids are fitted on a random subset of that size
    (faiss' default trade-off) and then every row is assigned.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"k-means needs a (n, dim) matrix with n >= k={k}, got shape {x.shape}")
    model = faiss.Kmeans(x.shape[1], k, niter=iterations, nredo=redo, seed=seed, verbose=False,
                         max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1)
    model.train(x)
    assignments = model.index.search(x, 1)[1]
    return KMeansResult(model.centroids.copy(), assignments[:, 0].astype(np.int64))


def pca_whiten(x: np.ndarray, dim: int) -> np.ndarray:
    """The rows of `x` projected on their `dim` principal directions, each scaled to unit variance.

    DeepCluster whitens before k-means so that no direction of large variance dominates the distances;
    `dim` must not exceed the rank of the centred data (at most rows - 1), or the whitening divides by ~0.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not 0 < dim <= min(len(x) - 1, x.shape[1]):
        raise ValueError(f"PCA to {dim} dimensions needs more than {dim} rows and at least {dim} columns, "
                         f"got {x.shape}")
    pca = faiss.PCAMatrix(x.shape[1], dim)
    pca.train(x)
    projected = pca.apply(x)
    # faiss' own whitening (eigen power -1/2) scales by the unnormalised eigenvalues; divide by the std
    return projected / projected.std(axis=0, keepdims=True).clip(min=1e-12)
