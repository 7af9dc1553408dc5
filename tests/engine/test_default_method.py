"""The default method sorts a small 10-view stack with in-plane rotation, shifts and CTF better
than the reference and invariant methods (the full comparison is the benchmark's job)."""

from dataclasses import replace

import torch
from sklearn.metrics import adjusted_rand_score

from worker.engine.cluster import initial_labels, kmeans_labels
from worker.engine.config import ClassifyConfig
from worker.engine.ctf import phase_flip
from worker.engine.methods import get_method
from worker.engine.preprocess import fourier_crop, normalise
from worker.engine.simulate import simulate


def _ari(name, images, sim, config, rounds):
    method = get_method(name)
    if hasattr(method, "set_optics"):
        method.set_optics(sim.ctf, sim.pixel_size * 64 / images.shape[-1], True)
    labels = initial_labels(images[:, 0].numpy(), sim.k, 0)
    generator = torch.Generator()
    for r in range(1, rounds + 1):
        generator.manual_seed(r)
        embedding, _ = method.train_round(images, labels, config, r, generator, lambda event: None)
        labels = kmeans_labels(embedding, sim.k, r)
    return adjusted_rand_score(sim.views, labels)


def test_the_default_beats_reference_and_invariant_on_rotated_ctf_views():
    sim = simulate(n=800, k=10, snr=0.1, rotate=True, shift=4.0, ctf=True, seed=21)
    flipped = phase_flip(sim.images, sim.ctf, sim.pixel_size)
    images = fourier_crop(normalise(torch.from_numpy(flipped)), 32)[:, None]
    config = ClassifyConfig(cluster_num=10, epoch_num=5, round_num=1, size=32, device="cpu")
    default = _ari(ClassifyConfig.method, images, sim, config, rounds=1)
    reference = _ari("reference", images, sim, replace(config, epoch_num=2), rounds=1)
    invariant = _ari("invariant", images, sim, config, rounds=1)
    scores = {"default": default, "invariant": invariant, "reference": reference}
    # measured: default (pose) 0.984, pose-em 0.984, invariant 0.831, reference 0.001 (one round,
    # 80 particles a view; 14, 8, 3 and 2 s on this 2-core CPU)
    assert default > 0.85, scores
    assert default > invariant + 0.02, scores
    assert default > reference + 0.5, scores
