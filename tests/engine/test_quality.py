"""The per-class quality figure (FRC of half-set averages) and the match to a true view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.align import rotational_average, transform
from worker.engine.quality import (
    class_resolutions,
    frc,
    half_set_averages,
    resolution,
    sort_order,
    view_match,
)
from worker.engine.simulate import simulate


def test_frc_is_one_for_equal_images_and_near_zero_for_independent_noise():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((64, 64))
    assert np.allclose(frc(image, 3 * image)[1:], 1.0)
    noise = frc(rng.standard_normal((64, 64)), rng.standard_normal((64, 64)))
    assert np.abs(noise[4:]).mean() < 0.15
    assert frc(np.stack([image, image]), np.stack([image, -image])).shape == (2, 32)


def test_resolution_reads_the_first_crossing_in_angstrom():
    curve = np.array([1.0, 0.9, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05])  # S = 16
    # Crossing at ring 3.5 -> 16 px * 2 Å / 3.5.
    assert resolution(curve, 2.0) == pytest.approx(16 * 2.0 / 3.5)
    assert resolution(np.ones(8), 2.0) == pytest.approx(4.0)  # Nyquist
    assert resolution(np.array([1.0, 0.1, 0.9, 0.9]), 2.0) is None


def test_more_particles_and_more_signal_give_finer_resolution():
    sim = simulate(800, 2, 48, snr=0.2, seed=0)
    images = torch.from_numpy(sim.images)
    few = np.where(np.arange(800) < 100, sim.views, -1)
    keep = few >= 0
    coarse = class_resolutions(images[keep], few[keep], 2, sim.pixel_size)
    fine = class_resolutions(images, sim.views, 2, sim.pixel_size)
    for c in range(2):
        assert fine[c] is not None and coarse[c] is not None
        assert 2 * sim.pixel_size <= fine[c] < coarse[c]
    clean = simulate(200, 2, 48, snr=100.0, seed=0)
    sharp = class_resolutions(torch.from_numpy(clean.images), clean.views, 2, clean.pixel_size)
    assert max(sharp) < min(fine)


def test_classes_without_two_members_have_no_figure():
    images = torch.randn(5, 1, 32, 32)
    labels = np.array([0, 0, 0, 0, 1])
    result = class_resolutions(images, labels, 3, 1.5)
    assert result[1] is None and result[2] is None
    halves = half_set_averages(images, labels, 3)
    assert halves.shape == (3, 2, 32, 32)
    assert np.allclose(halves[0, 0], images[[0, 2], 0].mean(0).numpy(), atol=1e-6)
    assert np.allclose(halves[0, 1], images[[1, 3], 0].mean(0).numpy(), atol=1e-6)


def test_sort_order_puts_finest_first_then_largest_and_unknown_last():
    classes = [
        {"class": 1, "count": 50, "quality": 12.0},
        {"class": 2, "count": 10, "quality": None},
        {"class": 3, "count": 30, "quality": 8.0},
        {"class": 4, "count": 80, "quality": 8.0},
    ]
    assert sort_order(classes) == [3, 2, 0, 1]


def test_view_match_sees_the_view_specific_part():
    sim = simulate(4, 2, 64, snr=1.0, seed=2)
    view = sim.clean_views[0]
    turned = transform(torch.from_numpy(view[None]), torch.tensor([50.0]), torch.tensor([[1.5, -1.0]]))[
        0
    ].numpy()
    same = view_match(turned, view)
    assert same["correlation"] > 0.98 and same["anisotropic"] > 0.9
    smeared = rotational_average(torch.from_numpy(view)).numpy()
    blurred = view_match(smeared, view)
    assert blurred["anisotropic"] < 0.3 < same["anisotropic"] - 0.5
