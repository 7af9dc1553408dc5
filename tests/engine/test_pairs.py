"""The pair rule: half the partners from the same cluster, the rest uniform; y = labels differ."""

import numpy as np
import torch

from worker.engine.pairs import PairSampler


def _sample(labels, batches=200, batch=512, seed=1):
    sampler = PairSampler.from_labels(torch.as_tensor(labels))
    generator = torch.Generator().manual_seed(seed)
    parts = [sampler.sample(batch, generator) for _ in range(batches)]
    return [torch.cat(p).numpy() for p in zip(*parts)]


def test_same_cluster_fraction_and_labels():
    k = 4
    labels = np.repeat(np.arange(k), [100, 200, 300, 400])
    first, second, unlike = _sample(labels)
    assert np.array_equal(unlike, (labels[first] != labels[second]).astype(int))
    # P(same) = 0.5 + 0.5 * sum(p_c^2) for these cluster sizes
    p = np.array([100, 200, 300, 400]) / 1000
    expected_same = 0.5 + 0.5 * np.sum(p**2)
    assert abs((1 - unlike.mean()) - expected_same) < 0.01


def test_first_images_are_uniform_and_partners_cover_their_cluster():
    labels = np.array([0] * 5 + [1] * 995)
    first, second, unlike = _sample(labels)
    counts = np.bincount(first, minlength=1000)
    assert abs(counts[:5].sum() / len(first) - 0.005) < 0.002
    # every member of the small cluster appears as a same-cluster partner of the small cluster
    small_partners = second[(labels[first] == 0) & (labels[second] == 0)]
    assert set(small_partners.tolist()) == set(range(5))


def test_labels_need_not_be_contiguous():
    labels = np.array([7, 7, 3, 3, 3, 9])
    first, second, unlike = _sample(labels, batches=20, batch=64)
    assert np.array_equal(unlike, (labels[first] != labels[second]).astype(int))


def test_sampling_is_reproducible_for_a_seed():
    labels = np.arange(50) % 3
    a = _sample(labels, batches=3, seed=5)
    b = _sample(labels, batches=3, seed=5)
    c = _sample(labels, batches=3, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
