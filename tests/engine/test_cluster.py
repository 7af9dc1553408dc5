"""The initial labels' PCA: fitted on a sample, applied chunk by chunk, float16 or float32 alike,
reproducible for a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from worker.engine import cluster
from worker.engine.cluster import initial_labels, pca_features
from worker.engine.preprocess import normalise
from worker.engine.simulate import simulate


@pytest.fixture(scope="module")
def views():
    """2,000 particles of 6 views at SNR 0.5, box 32, normalised as the pipeline stores them."""
    sim = simulate(n=2000, k=6, box=32, snr=0.5, seed=4)
    return sim, normalise(torch.from_numpy(sim.images))


def test_the_leading_components_are_scikit_learns(views):
    _, images = views
    flat = images.reshape(len(images), -1).numpy()
    expected = PCA(5, svd_solver="full").fit_transform(flat)
    found = pca_features(images, 0, 5)
    assert found.shape == (2000, 5) and found.dtype == np.float32
    for c in range(5):  # the same axes up to sign, the same spread
        assert abs(np.corrcoef(expected[:, c], found[:, c])[0, 1]) > 0.9999
        assert found[:, c].std() == pytest.approx(expected[:, c].std(), rel=1e-3)


def test_a_float16_stack_gives_the_float32_labels_reproducibly(views):
    sim, images = views
    full = initial_labels(images, 6, 0)
    half = initial_labels(images.half(), 6, 0)
    assert adjusted_rand_score(sim.views, full) == 1.0
    assert adjusted_rand_score(full, half) == 1.0  # the same classes (equal sizes may swap numbers)
    assert np.array_equal(pca_features(images.half(), 3), pca_features(images.half(), 3))


def test_a_fit_on_a_sample_projects_every_particle_in_chunks(views, monkeypatch):
    sim, images = views
    monkeypatch.setattr(cluster, "PCA_CHUNK_BYTES", 300 * 32 * 32 * 4)  # 300 particles a chunk
    sampled = pca_features(images.half(), 0, sample=400)
    whole = pca_features(images, 0)
    assert sampled.shape == whole.shape == (2000, 50)
    # The signal's five axes, found from a fifth of the particles: close axes may turn within
    # their plane, so the five sampled coordinates are compared as a subspace of the whole fit's.
    fitted, *_ = np.linalg.lstsq(whole[:, :5], sampled[:, :5], rcond=None)
    unexplained = ((sampled[:, :5] - whole[:, :5] @ fitted) ** 2).sum() / (sampled[:, :5] ** 2).sum()
    assert unexplained < 0.01
    assert adjusted_rand_score(sim.views, cluster.kmeans_labels(sampled, 6, 0)) == 1.0
    # Another seed draws another sample: other axes, the same classes.
    other = pca_features(images.half(), 1, sample=400)
    assert not np.array_equal(other, sampled)
    assert adjusted_rand_score(sim.views, cluster.kmeans_labels(other, 6, 0)) == 1.0


def _mixture(n: int, k: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    truth = rng.choice(k, n, p=rng.dirichlet(np.full(k, 2.0)))
    centres = rng.normal(0.0, 1.0, (k, 20))
    return (centres[truth] + rng.normal(0.0, spread, (n, 20))).astype(np.float32), truth


def test_kmeans_labels_the_largest_class_zero_reproducibly():
    features, truth = _mixture(3000, 8, 0.1, 0)
    labels = cluster.kmeans_labels(features, 8, 0)
    assert labels.dtype == np.int64 and set(labels) == set(range(8))
    counts = np.bincount(labels)
    assert (np.diff(counts) <= 0).all()  # class 0 the largest, then in decreasing size
    assert adjusted_rand_score(truth, labels) == 1.0
    assert np.array_equal(labels, cluster.kmeans_labels(torch.from_numpy(features), 8, 0))


def test_kmeans_is_as_good_as_scikit_learns_on_overlapping_classes():
    from sklearn.cluster import KMeans

    features, truth = _mixture(5000, 20, 0.35, 1)
    ours = cluster.kmeans_labels(features, 20, 0)
    theirs = KMeans(20, n_init=10, random_state=0).fit(features).labels_

    def inertia(labels):
        means = np.stack([features[labels == c].mean(0) for c in range(20)])
        return float(((features - means[labels]) ** 2).sum())

    assert inertia(ours) <= 1.01 * inertia(theirs)
    assert adjusted_rand_score(truth, ours) > adjusted_rand_score(truth, theirs) - 0.02


def test_kmeans_seeds_on_a_sample_then_refines_on_every_point(monkeypatch):
    from worker.engine import kmeans

    features, truth = _mixture(4000, 6, 0.1, 2)
    monkeypatch.setattr(kmeans, "SAMPLE", 500)
    labels, inertia = kmeans.kmeans(features, 6, 0, 3)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert inertia == pytest.approx(
        sum(((features[labels == c] - features[labels == c].mean(0)) ** 2).sum() for c in range(6)), rel=1e-3
    )


def test_kmeans_fills_every_class_when_points_repeat():
    points = np.repeat(np.eye(5, 20, dtype=np.float32), [50, 30, 10, 5, 1], axis=0)
    labels = cluster.kmeans_labels(points, 5, 0)
    assert np.array_equal(labels, np.repeat(np.arange(5), [50, 30, 10, 5, 1]))
