"""Expectation-maximisation over classes and poses (worker.engine.likelihood), with its schedule.

    state = run_em(small, ctfs, k=10, iterations=12, seed=config.seed)
    state.posterior.labels, state.references

Starts from K random subsets of the particles, each particle turned by a random angle (RELION's
way: the references differ only by noise at first, and the EM breaks the symmetry), then
alternates E- and M-steps. The angular step is coarse in the first iterations and finer later;
classes that empty out are re-seeded by splitting the largest one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from worker.engine.align import centring_shift, transform
from worker.engine.likelihood import (
    BATCH,
    Posterior,
    expectation,
    maximisation,
    noise_spectrum,
    update_noise,
)

SEARCH_SIZE = 32  # px: the E-step runs on particles Fourier-cropped to this size
SHIFT_RADIUS = 3  # px at the search size (+-6 px at 64 px)
COARSE_STEP = 15.0  # degrees, first iterations
FINE_STEP = 7.5  # degrees, later iterations
COARSE_ITERATIONS = 4
PRUNE_CLASSES = 3  # classes scored per particle after the coarse iterations
MIN_FRACTION = 0.15  # a class below this share of N/K is re-seeded
CENTRED_LIMIT = 1  # px: a class's mean shift stays this far inside the shift search window
CENTRED_MEMBERS = 50  # ... in a class of at least this many particles (a few say nothing)
NOISE_FLOOR = 0.2  # sigma2 never drops below this share of the particles' own power in a ring


@dataclass
class EmState:
    references: torch.Tensor  # (K, S, S) at the search size
    sigma2: torch.Tensor  # (S//2+1,)
    log_prior: torch.Tensor  # (K,)
    posterior: Posterior | None = None


def angle_grid(step: float, device=None) -> torch.Tensor:
    return torch.arange(0.0, 360.0, step, device=device)


def random_references(images: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Means of k random subsets, each particle turned by a random angle."""
    rng = np.random.default_rng(seed)
    n = len(images)
    groups = torch.as_tensor(rng.permutation(n) % k, device=images.device)
    angles = torch.as_tensor(rng.uniform(0, 360, n), dtype=torch.float32, device=images.device)
    sums = torch.zeros((k, *images.shape[-2:]), device=images.device)
    for start in range(0, n, BATCH):  # a float32 copy of a batch, never of the stack
        stop = min(n, start + BATCH)
        turned = transform(
            images[start:stop].float(), angles[start:stop], torch.zeros(stop - start, 2, device=images.device)
        )
        sums.index_add_(0, groups[start:stop], turned)
    return sums / torch.bincount(groups, minlength=k)[:, None, None].clamp(min=1)


def references_from_labels(
    images: torch.Tensor,
    ctfs: torch.Tensor,
    labels: np.ndarray,
    k: int,
    state: EmState,
    angle_step: float = FINE_STEP,
) -> torch.Tensor:
    """References for new labels: each label class's particles aligned to the existing reference
    that most of them were assigned to, then averaged with their CTFs."""
    labels_t = torch.as_tensor(labels, device=images.device)
    old = state.posterior.classes[:, 0]
    target = torch.zeros(k, dtype=torch.long, device=images.device)
    for c in range(k):
        members = old[labels_t == c]
        if len(members):
            target[c] = torch.bincount(members, minlength=len(state.references)).argmax()
    # One E-step where particle i may only take the reference of its label's majority class.
    allowed = torch.zeros((len(images), k), dtype=torch.bool, device=images.device)
    allowed[torch.arange(len(images)), labels_t] = True
    posterior = expectation(
        images,
        ctfs,
        state.references[target],
        state.sigma2,
        torch.zeros(k, device=images.device),
        angle_grid(angle_step, images.device),
        SHIFT_RADIUS,
        allowed=allowed,
    )
    references, _ = maximisation(images, ctfs, posterior, k, state.sigma2)
    state.posterior = posterior
    return references


def _centred(references: torch.Tensor, posterior: Posterior) -> torch.Tensor:
    """Each reference moved towards its centre (align.centring_shift) as far as its particles
    can follow. A particle at angle a and shift s matches a reference moved by d at s + R(a) d;
    the class's mean shift must stay CENTRED_LIMIT px inside the search window. On rotated data
    R(a) d averages out and every reference is centred; a view whose mass sits off the box
    centre in unrotated data would otherwise push its particles to the window's edge, where
    the clipped shifts blurred its reference until its particles joined another class. A class
    of fewer than CENTRED_MEMBERS particles (round 1's near-empty classes, soon re-seeded) is
    centred in full: limiting those changed runs on rotated data for no gain."""
    classes, angles, shifts = posterior.best()
    theta = torch.deg2rad(angles.float())
    cos, sin = torch.cos(theta), torch.sin(theta)
    limit = SHIFT_RADIUS - CENTRED_LIMIT
    moved = []
    for c, reference in enumerate(references):
        full = centring_shift(reference, SHIFT_RADIUS).float()
        members = classes == c
        d = full
        if int(members.sum()) >= CENTRED_MEMBERS:
            own, cos_m, sin_m = shifts[members], cos[members], sin[members]
            for fraction in (1.0, 0.5, 0.0):  # the last keeps the reference where it is
                d = full * fraction
                turned = torch.stack([cos_m * d[0] - sin_m * d[1], sin_m * d[0] + cos_m * d[1]], -1)
                if bool(((own + turned).mean(0).abs() <= limit).all()):
                    break
        moved.append(transform(reference[None], torch.zeros(1, device=reference.device), d[None])[0])
    return torch.stack(moved)


def split_class(images: torch.Tensor, posterior: Posterior, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeds from one class: its members at their best poses, split by the sign of their
    first principal component (the direction along which the class is least uniform)."""
    cls, angle, shift = posterior.best()
    members = torch.nonzero(cls == index).flatten()
    aligned = transform(images[members].float(), angle[members], shift[members]).reshape(len(members), -1)
    centred = aligned - aligned.mean(0)
    axis = leading_axis(centred)
    side = (centred @ (axis * torch.sign(axis[axis.abs().argmax()]))) > 0
    size = images.shape[-1]
    return aligned[side].mean(0).reshape(size, size), aligned[~side].mean(0).reshape(size, size)


def leading_axis(centred: torch.Tensor) -> torch.Tensor:
    """The unit leading eigenvector of the covariance of (M, P) centred rows, up to sign: exact
    and free of random numbers (a randomized PCA here drew from torch's global generator, so a
    run's classes depended on what the process had computed before). With fewer rows than
    pixels it comes from the (M x M) Gram matrix instead, the same axis at a fraction of the
    cost: eigh of 1,024 pixels at the search size took 0.09 s a split, 3.7 s of a 2,000-particle
    run's round 1."""
    if len(centred) < centred.shape[1]:
        _, vectors = torch.linalg.eigh((centred @ centred.T).double())
        axis = centred.T.double() @ vectors[:, -1]
        return (axis / axis.norm()).to(centred.dtype)
    _, vectors = torch.linalg.eigh((centred.T @ centred).double())
    return vectors[:, -1].to(centred.dtype)


def _reseed(images: torch.Tensor, state: EmState, k: int) -> bool:
    """Replace near-empty classes by splitting the most populated one in two; True if any."""
    counts = state.posterior.class_probs.sum(0).clone()
    small = torch.nonzero(counts < MIN_FRACTION * len(images) / k).flatten()
    references, log_prior = state.references.clone(), state.log_prior.clone()
    for index in small.tolist():
        largest = int(torch.argmax(counts))
        if int((state.posterior.classes[:, 0] == largest).sum()) < 4:
            break
        references[largest], references[index] = split_class(images, state.posterior, largest)
        counts[largest] /= 2
        counts[index] = counts[largest]
        log_prior[largest] = log_prior[index] = log_prior[largest] - float(np.log(2))
    state.references, state.log_prior = references, log_prior
    return len(small) > 0


def run_em(
    images: torch.Tensor,
    ctfs: torch.Tensor,
    k: int,
    iterations: int,
    seed: int,
    state: EmState | None = None,
    on_iteration: Callable[[int, EmState], None] | None = None,
    coarse_iterations: int = COARSE_ITERATIONS,
    reseed: bool = True,
    permitted: torch.Tensor | None = None,
    power: torch.Tensor | None = None,
) -> EmState:
    """EM from random subsets (or from `state`) at the search size; returns the final state.
    With `reseed`, classes that empty out are re-seeded between iterations (module doc).
    `permitted` (N, K) bool, if given, holds the only classes each particle may take.
    `power` is noise_spectrum(images) where the caller keeps it (one pass over the stack less)."""
    device = images.device
    power = noise_spectrum(images) if power is None else power
    if state is None:
        state = EmState(
            random_references(images, k, seed), power, torch.full((k,), -float(np.log(k)), device=device)
        )
    # Where the signal dominates a ring (low frequencies at high SNR), the power the class does
    # not explain is a small difference of large numbers and can come out at zero or below. The
    # floor is the particles' own power, not the last estimate: a floor taken from the state
    # sank five-fold each round, until one ring's weight swamped the others and the classes fell
    # apart (4 clean unrotated views: ARI 1.00 in round 3, 0.34 after round 5).
    floor = NOISE_FLOOR * power
    reseeded = False
    for iteration in range(1, iterations + 1):
        step = COARSE_STEP if iteration <= coarse_iterations else FINE_STEP
        allowed = None
        if (
            iteration > coarse_iterations
            and state.posterior is not None
            and k > PRUNE_CLASSES
            and not reseeded
        ):
            # Once the classes have formed, a particle's likely classes change little: score
            # only its PRUNE_CLASSES most probable ones (K / PRUNE_CLASSES times less work).
            top = state.posterior.class_probs.topk(PRUNE_CLASSES, dim=1).indices
            allowed = torch.zeros((len(images), k), dtype=torch.bool, device=device)
            allowed.scatter_(1, top, True)
        if permitted is not None:
            allowed = permitted if allowed is None else allowed & permitted
        posterior = expectation(
            images,
            ctfs,
            state.references,
            state.sigma2,
            state.log_prior,
            angle_grid(step, device),
            SHIFT_RADIUS,
            allowed=allowed,
        )
        references, _ = maximisation(images, ctfs, posterior, k, state.sigma2)
        state.sigma2 = update_noise(images, ctfs, references, posterior, floor)
        counts = posterior.class_probs.sum(0)
        state.log_prior = torch.log((counts / counts.sum()).clamp(min=1e-3))
        state.references, state.posterior = _centred(references, posterior), posterior
        reseeded = reseed and iteration < iterations and _reseed(images, state, k)
        if on_iteration is not None:
            on_iteration(iteration, state)
    return state
