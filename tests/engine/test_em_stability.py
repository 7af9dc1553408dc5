"""The EM stays put on clean, unrotated data: the noise floor does not sink round after round,
and a view whose mass sits off the box centre keeps its particles inside the shift window."""

import torch
from sklearn.metrics import adjusted_rand_score

from worker.engine.likelihood import noise_spectrum, particle_ctfs
from worker.engine.poses import (
    CENTRED_LIMIT,
    NOISE_FLOOR,
    SEARCH_SIZE,
    SHIFT_RADIUS,
    references_from_labels,
    run_em,
)
from worker.engine.preprocess import fourier_crop, normalise
from worker.engine.simulate import simulate


def _clean_unrotated(seed: int, n: int = 600):
    """The bench's "easy" set at a smaller N: 4 views, no rotation, shift or CTF, SNR 1."""
    sim = simulate(n=n, k=4, snr=1.0, rotate=False, seed=seed)
    small = fourier_crop(normalise(torch.from_numpy(sim.images)), SEARCH_SIZE)
    return sim, small, particle_ctfs(None, n, SEARCH_SIZE, sim.pixel_size * 2, False)


def _rounds(small, ctfs, k, rounds, seed=0):
    """Round 1's EM, then `rounds` later rounds as the pose method runs them: references from
    the last labels, two more iterations. Yields the state after each round."""
    state = run_em(small, ctfs, k, 10, seed)
    yield state
    for r in range(rounds):
        labels = state.posterior.classes[:, 0].numpy()
        state.references = references_from_labels(small, ctfs, labels, k, state)
        state = run_em(small, ctfs, k, 2, seed + r + 1, state=state, coarse_iterations=0)
        yield state


def test_the_noise_floor_is_the_particles_own_power_in_every_round():
    sim, small, ctfs = _clean_unrotated(seed=1003)
    floor = NOISE_FLOOR * noise_spectrum(small)
    for state in _rounds(small, ctfs, 4, rounds=4):
        assert (state.sigma2 >= floor * (1 - 1e-5)).all()
    # Where the signal dominates, the power left unexplained is no noise estimate at all: the
    # floor is what holds the lowest rings (a floor taken from the last estimate sank to zero).
    assert torch.isclose(state.sigma2[2], floor[2])


def test_clean_unrotated_views_stay_apart_round_after_round():
    # Seed 1002 draws a view whose mass sits 6 px (3 px at the search size) off the box centre.
    sim, small, ctfs = _clean_unrotated(seed=1002)
    for state in _rounds(small, ctfs, 4, rounds=6):
        classes, _, shifts = state.posterior.best()
        assert adjusted_rand_score(sim.views, classes.numpy()) == 1.0
        for c in range(4):
            mean = shifts[classes == c].mean(0)
            assert (mean.abs() <= SHIFT_RADIUS - CENTRED_LIMIT).all()
