"""In-plane alignment: exact pose recovery, the simulator's conventions, aligned averages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.align import (
    AlignedAverager,
    align_to_reference,
    apply_alignment,
    transform,
)
from worker.engine.molecules import make_model, render, view_rotations
from worker.engine.quality import view_match
from worker.engine.simulate import simulate


def correlation(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def angle_error(a, b) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def blob_view():
    rng = np.random.default_rng(11)
    model = make_model(64, rng)
    rotations = view_rotations(1, rng)
    return model, rotations


def test_recovers_a_known_rotation_and_shift(blob_view):
    model, rotations = blob_view
    rng = np.random.default_rng(0)
    angles = np.concatenate([[0.0, 37.0, 181.3, 359.2], rng.uniform(0, 360, 12)])
    shifts = np.concatenate([[[0, 0], [1.3, -2.2], [-3.6, 2.45], [0.4, 4.7]], rng.uniform(-5, 5, (12, 2))])
    reference = render(model, rotations, np.zeros(1), np.zeros((1, 2)), 64)[0]
    particles = render(model, rotations[np.zeros(16, dtype=int)], angles, shifts, 64)
    params = align_to_reference(torch.from_numpy(particles), torch.from_numpy(reference))
    assert angle_error(params.angles, angles).max() < 3.0, params.angles
    assert np.abs(params.shifts - shifts).max() < 0.5, params.shifts - shifts
    # Applying the found pose brings every particle back onto the reference.
    aligned = apply_alignment(torch.from_numpy(particles), params).numpy()
    assert min(correlation(image, reference) for image in aligned) > 0.99


def test_recovers_the_pose_through_noise(blob_view):
    model, rotations = blob_view
    rng = np.random.default_rng(1)
    angles, shifts = rng.uniform(0, 360, 40), rng.uniform(-3, 3, (40, 2))
    reference = render(model, rotations, np.zeros(1), np.zeros((1, 2)), 64)[0]
    clean = render(model, rotations[np.zeros(40, dtype=int)], angles, shifts, 64)
    noisy = clean + rng.normal(0, np.sqrt(clean.var() / 0.5), clean.shape).astype(np.float32)
    params = align_to_reference(torch.from_numpy(noisy), torch.from_numpy(reference))
    assert np.median(angle_error(params.angles, angles)) < 3.0
    assert np.median(np.abs(params.shifts - shifts)) < 0.5


def test_transform_undoes_the_simulated_pose(blob_view):
    model, rotations = blob_view
    view = render(model, rotations, np.zeros(1), np.zeros((1, 2)), 64)
    particle = render(model, rotations, np.array([70.0]), np.array([[2.0, -1.5]]), 64)
    back = transform(torch.from_numpy(particle), torch.tensor([70.0]), torch.tensor([[2.0, -1.5]]))
    assert correlation(back[0].numpy(), view[0]) > 0.995
    # And a 90 degree turn without shift only permutes pixels (no interpolation loss).
    turned = transform(torch.from_numpy(view), torch.tensor([90.0]), torch.zeros(1, 2))[0].numpy()
    original = transform(torch.from_numpy(turned[None]), torch.tensor([-90.0]), torch.zeros(1, 2))
    assert np.allclose(original[0].numpy()[2:-2, 2:-2], view[0][2:-2, 2:-2], atol=1e-5)


def test_aligned_averages_match_the_true_views_better_than_plain_means():
    sim = simulate(360, 2, 48, snr=0.3, rotate=True, shift=2, seed=3)
    images = (sim.images - sim.images.mean((1, 2), keepdims=True)) / sim.images.std((1, 2), keepdims=True)
    tensor = torch.from_numpy(images)[:, None]
    averager = AlignedAverager(iterations=3)
    averages = averager.average(tensor, sim.views, 2)
    assert averages.shape == (2, 48, 48) and averages.dtype == np.float32
    assert averager.half_averages.shape == (2, 2, 48, 48)
    assert averager.params.angles.shape == (360,)
    for view in range(2):

        def match(image: np.ndarray, view: int = view) -> float:
            return view_match(image, sim.clean_views[view])["correlation"]

        def anisotropic_match(image: np.ndarray, view: int = view) -> float:
            return view_match(image, sim.clean_views[view])["anisotropic"]

        plain = images[sim.views == view].mean(0)
        assert match(averages[view]) > 0.95
        # The view-specific part (what is left after removing the rotational average) is
        # where a rotationally smeared mean fails.
        assert anisotropic_match(averages[view]) > 0.8
        assert anisotropic_match(averages[view]) > anisotropic_match(plain) + 0.3


def test_empty_classes_give_zero_averages():
    images = torch.randn(10, 1, 32, 32)
    averages = AlignedAverager(iterations=1).average(images, np.zeros(10, dtype=int), 3)
    assert averages.shape == (3, 32, 32)
    assert np.all(averages[1:] == 0) and np.abs(averages[0]).sum() > 0
