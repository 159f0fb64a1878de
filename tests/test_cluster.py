"""The clustering helper: k-means finds separated clusters, is deterministic for a seed and uses every
centroid; PCA-whitening gives unit-variance, uncorrelated directions."""
from __future__ import annotations

import numpy as np
import pytest

from mmssl.cluster import kmeans, pca_whiten


def blobs(k: int = 5, per: int = 100, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 20.0 * np.eye(k, dim)  # every pair of centres 28 apart, unit noise around them
    labels = np.repeat(np.arange(k), per)
    return (centres[labels] + rng.normal(size=(k * per, dim))).astype(np.float32), labels


def test_kmeans_recovers_separated_clusters() -> None:
    x, labels = blobs()
    result = kmeans(x, k=5, seed=0, redo=5)  # the best of 5 starts: Lloyd's can merge two blobs
    # the same partition up to renaming: each true cluster maps to exactly one found cluster
    pairs = set(zip(labels.tolist(), result.assignments.tolist(), strict=True))
    assert len(pairs) == 5 and len({a for _, a in pairs}) == 5
    nearest = ((x[:, None] - result.centroids[None]) ** 2).sum(-1).argmin(1)  # each row's nearest centroid
    np.testing.assert_array_equal(nearest, result.assignments)


def test_kmeans_is_deterministic_for_a_seed_and_changes_with_it() -> None:
    x = np.random.default_rng(1).normal(size=(600, 16)).astype(np.float32)
    a, b, c = kmeans(x, 20, seed=3), kmeans(x, 20, seed=3), kmeans(x, 20, seed=4)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    assert not np.array_equal(a.assignments, c.assignments)


def test_kmeans_uses_every_centroid_and_refuses_too_few_rows() -> None:
    x = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    assert len(np.unique(kmeans(x, 32, seed=0).assignments)) == 32
    with pytest.raises(ValueError, match="n >= k"):
        kmeans(x[:10], 32, seed=0)


def test_pca_whiten_gives_unit_variance_uncorrelated_directions() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 12)) @ rng.normal(size=(12, 12)) * np.linspace(0.1, 10, 12)
    white = pca_whiten(x.astype(np.float32), 6)
    assert white.shape == (2000, 6)
    cov = np.cov(white, rowvar=False)
    np.testing.assert_allclose(cov, np.eye(6), atol=0.05)
    with pytest.raises(ValueError, match="6 dimensions"):
        pca_whiten(x[:6].astype(np.float32), 6)  # 6 centred rows span 5 directions
