"""Local pose refinement before the final averages: from poses on the search grid it finds the
true angle and shift more closely, and the averages at the refined poses match the views better."""

import numpy as np
import torch

from worker.engine.ctf import phase_flip
from worker.engine.likelihood import Posterior, maximisation, noise_spectrum, particle_ctfs
from worker.engine.local_poses import refine_best
from worker.engine.poses import FINE_STEP, SEARCH_SIZE
from worker.engine.preprocess import normalise
from worker.engine.quality import view_match
from worker.engine.simulate import simulate


def _on_search_grid(sim, scale: float) -> Posterior:
    """The true poses rounded as the search finds them at best: angles to FINE_STEP, shifts to
    whole pixels of the search size."""
    angles = np.round(sim.angles / FINE_STEP) * FINE_STEP
    shifts = np.round(sim.shifts / scale)
    n = sim.n
    return Posterior(
        classes=torch.as_tensor(sim.views)[:, None],
        angles=torch.as_tensor(angles, dtype=torch.float32)[:, None],
        shifts=torch.as_tensor(shifts, dtype=torch.float32)[:, None],
        weights=torch.ones(n, 1),
        class_probs=torch.nn.functional.one_hot(torch.as_tensor(sim.views), sim.k).float(),
        log_likelihood=torch.zeros(n),
    )


def _angle_error(found, truth):
    return np.abs((np.asarray(found) - truth + 180.0) % 360.0 - 180.0)


def test_refinement_moves_grid_poses_towards_the_true_ones_and_sharpens_the_averages():
    sim = simulate(n=300, k=3, snr=0.5, rotate=True, shift=4.0, ctf=True, seed=5)
    images = normalise(torch.from_numpy(phase_flip(sim.images, sim.ctf, sim.pixel_size)))
    size = images.shape[-1]
    scale = size / SEARCH_SIZE
    ctfs = particle_ctfs(sim.ctf, sim.n, size, sim.pixel_size, True)
    sigma2 = noise_spectrum(images)
    coarse = _on_search_grid(sim, scale)
    averages, _ = maximisation(images, ctfs, coarse, sim.k, sigma2, scale, sharp=True)

    refined = refine_best(images, ctfs, coarse, averages, sigma2, scale)

    assert torch.equal(refined.classes, coarse.classes)
    before = _angle_error(coarse.angles[:, 0].numpy(), sim.angles)
    after = _angle_error(refined.angles[:, 0].numpy(), sim.angles)
    shift_before = np.linalg.norm(coarse.shifts[:, 0].numpy() * scale - sim.shifts, axis=1)
    shift_after = np.linalg.norm(refined.shifts[:, 0].numpy() * scale - sim.shifts, axis=1)
    assert np.median(after) < 0.6 * np.median(before), (np.median(before), np.median(after))
    assert np.median(shift_after) < 0.8 * np.median(shift_before), (
        np.median(shift_before),
        np.median(shift_after),
    )
    sharper, _ = maximisation(images, ctfs, refined, sim.k, sigma2, scale, sharp=True)
    match = [view_match(a.numpy(), v)["anisotropic"] for a, v in zip(averages, sim.clean_views)]
    match_refined = [view_match(a.numpy(), v)["anisotropic"] for a, v in zip(sharper, sim.clean_views)]
    assert np.mean(match_refined) > np.mean(match), (match, match_refined)
