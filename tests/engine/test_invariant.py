"""The invariant method groups rotated particles by view where the reference method cannot."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from worker.engine.cluster import initial_labels, kmeans_labels
from worker.engine.config import ClassifyConfig
from worker.engine.events import EpochDone, LossPoint
from worker.engine.invariant import InvariantMethod, polar_descriptor
from worker.engine.methods import get_method
from worker.engine.simulate import simulate
from worker.engine.train import ReferenceMethod


def normalised(images: np.ndarray) -> torch.Tensor:
    x = (images - images.mean((1, 2), keepdims=True)) / images.std((1, 2), keepdims=True)
    return torch.from_numpy(x.astype(np.float32))[:, None]


def test_polar_descriptor_ignores_rotation():
    sim = simulate(4, 2, 32, snr=1e6, seed=0)
    turned = simulate(4, 2, 32, snr=1e6, rotate=True, seed=0)
    a = polar_descriptor(torch.from_numpy(sim.images))
    b = polar_descriptor(torch.from_numpy(turned.images))
    assert np.allclose(a, b, rtol=0.1, atol=0.05 * np.abs(a).max())


def test_invariant_beats_reference_on_a_rotated_stack():
    sim = simulate(400, 3, 32, snr=0.5, rotate=True, shift=1, seed=1)
    images = normalised(sim.images)
    config = ClassifyConfig(cluster_num=3, epoch_num=2, batch_size=64, size=32, device="cpu")
    labels = initial_labels(images[:, 0].numpy(), 3, 0)
    events = []
    method = get_method("invariant")
    assert isinstance(method, InvariantMethod)
    embedding, state = method.train_round(images, labels, config, 1, torch.Generator(), events.append)
    assert embedding.shape == (400, 20) and embedding.dtype == np.float32
    assert np.isfinite(state["loss"])
    assert any(isinstance(e, LossPoint) for e in events) and any(isinstance(e, EpochDone) for e in events)
    invariant = adjusted_rand_score(sim.views, kmeans_labels(embedding, 3, 0))

    generator = torch.Generator().manual_seed(0)
    reference_embedding, _ = ReferenceMethod().train_round(
        images, labels, config, 1, generator, lambda e: None
    )
    reference = adjusted_rand_score(sim.views, kmeans_labels(reference_embedding, 3, 0))
    assert invariant > 0.8, invariant
    assert invariant > reference + 0.3, (invariant, reference)


def test_compare_methods_reports_scores_and_average_fidelity():
    from worker.engine.bench_methods import compare_methods

    lines = []
    report = compare_methods(
        n=120, k=2, size=32, sets=("easy",), rounds=1, methods=("pca", "invariant"), on_progress=lines.append
    )
    entry = report["sets"]["easy"]
    assert set(entry["methods"]) == {"pca", "invariant"}
    assert entry["methods"]["invariant"]["ari"] > 0.9
    # Two well separated views: both methods recover them (NMI 1.0 measured; 0.9 leaves room).
    assert entry["methods"]["pca"]["nmi"] > 0.9 and entry["methods"]["invariant"]["nmi"] > 0.9
    assert entry["averages"]["aligned"]["correlation"] > 0.8
    assert len(lines) == 3
