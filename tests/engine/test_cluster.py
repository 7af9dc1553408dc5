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
    assert np.array_equal(half, full)
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
