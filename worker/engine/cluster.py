"""Initial labels, KMeans on embeddings, and the 2-D projection for the scatter plot."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

PCA_COMPONENTS = 50


def kmeans_labels(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """KMeans labels 0..k-1, renumbered so that class 0 is the largest (ties by centroid order)."""
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(features)
    counts = np.bincount(model.labels_, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(k)
    return rank[model.labels_]


def pca_features(
    images: np.ndarray, seed: int, components: int = PCA_COMPONENTS, *, overwrite: bool = False
) -> np.ndarray:
    """Project flattened images onto their leading principal components. With `overwrite` the
    PCA centres `images` in place instead of a copy (the same numbers, one copy fewer)."""
    flat = images.reshape(len(images), -1)
    components = max(1, min(components, flat.shape[0] - 1, flat.shape[1]))
    pca = PCA(n_components=components, svd_solver="randomized", random_state=seed, copy=not overwrite)
    return pca.fit_transform(flat)


def initial_labels(images: np.ndarray, k: int, seed: int, *, overwrite: bool = False) -> np.ndarray:
    """Labels before the first round: PCA of the pixels, then KMeans (docs/architecture.md, The algorithm, step 2)."""
    return kmeans_labels(pca_features(images, seed, overwrite=overwrite), k, seed)


def project_2d(embedding: np.ndarray, seed: int) -> np.ndarray:
    """A 2-D PCA projection of the embeddings, float32 (N, 2)."""
    if embedding.shape[1] <= 2:
        return embedding.astype(np.float32)
    return PCA(n_components=2, random_state=seed).fit_transform(embedding).astype(np.float32)
