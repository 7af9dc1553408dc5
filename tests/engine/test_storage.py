"""float16 storage of the preprocessed stack: half the memory, the same classes as float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.pipeline import classify
from worker.engine.preprocess import STORAGE_DTYPES, preprocess
from worker.engine.simulate import simulate, write_simulation


@pytest.fixture(scope="module")
def rotated_stack(tmp_path_factory):
    sim = simulate(400, 4, 32, snr=0.5, rotate=True, shift=1, ctf=True, seed=11)
    return sim, write_simulation(sim, tmp_path_factory.mktemp("sim"))["star"]


@pytest.fixture(scope="module")
def easy_stack(tmp_path_factory):
    """4 views, no rotation, SNR 1: every method finds the views, so any change is the storage's.
    (On hard small stacks a method's labels move with any perturbation, float16 or a seed; the
    README's "Stack storage" compares accuracy there.)"""
    sim = simulate(400, 4, 32, snr=1.0, seed=11)
    return sim, write_simulation(sim, tmp_path_factory.mktemp("easy"))["star"]


def test_float16_storage_is_float32_rounded_in_half_the_memory(rotated_stack):
    _, star = rotated_stack
    with ParticleStack.open(star) as stack:
        full = preprocess(stack, 32, dtype=STORAGE_DTYPES["float32"])
        half = preprocess(stack, 32, dtype=STORAGE_DTYPES["float16"])
    assert half.dtype == torch.float16 and half.shape == full.shape
    assert half.element_size() * half.nelement() == full.element_size() * full.nelement() // 2
    # Normalised pixels (unit variance) keep float16's 11 significant bits: a relative error of
    # 2^-11, far below the noise.
    assert torch.allclose(half.float(), full, rtol=2**-10, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pose", "reference", "invariant"])
def test_float16_storage_gives_the_float32_classes(easy_stack, tmp_path, method):
    sim, star = easy_stack
    labels = {}
    for storage in ("float32", "float16"):
        config = ClassifyConfig(
            method=method,
            cluster_num=4,
            round_num=1,
            epoch_num=3,
            size=32,
            device="cpu",
            storage=storage,
            umap=False,
        )
        with ParticleStack.open(star) as stack:
            labels[storage] = classify(stack, config, tmp_path / storage).labels
    assert adjusted_rand_score(labels["float32"], labels["float16"]) >= 0.95
    assert adjusted_rand_score(sim.views, labels["float16"]) >= 0.9  # and they are right


def test_storage_is_float16_unless_the_method_is_reference():
    for method, storage in [("pose", "float16"), ("invariant", "float16"), ("reference", "float32")]:
        assert ClassifyConfig(method=method).resolved("cpu").storage == storage
    assert ClassifyConfig(method="reference", storage="float16").resolved("cpu").storage == "float16"


def test_a_reference_run_stores_float32_and_a_pose_run_float16(easy_stack, tmp_path):
    import json

    _, star = easy_stack
    for method, expected in [("reference", "float32"), ("pose-em", "float16")]:
        config = ClassifyConfig(
            method=method, cluster_num=4, round_num=1, epoch_num=1, size=32, device="cpu", umap=False
        )
        with ParticleStack.open(star) as stack:
            classify(stack, config, tmp_path / method)
        recorded = json.loads((tmp_path / method / "config.json").read_text())["parameters"]
        assert recorded["storage"] == expected
    assert np.isfinite(np.load(tmp_path / "pose-em" / "round_01" / "embedding.npy")).all()
