"""Boxes that the classes explain no better than an empty box of the same noise.

Empty ice, and through the noise model's whitening also carbon edges and contamination, score a
log-likelihood (summed over every class and pose, as the E-step gives it) no higher than pure
noise does; a particle of any class scores well above it. So the threshold is measured, not
tuned: NULL_BOXES boxes of Gaussian noise with the fitted noise spectrum (sigma2 per ring) and
the CTFs of random particles are scored against the same references and priors, and a box that
scores at most their NULL_QUANTILE quantile is flagged: about nine empty boxes in ten are, and
(measured on the development seeds) no particle at SNR 0.1, about 0.7 % of them at SNR 0.05.
Aggregates of several particles score like particles and are not caught here.

    rows = empty_rows(images, state, ctfs, seed)   # bool (N,), or None when too few for a class
    labels, empty_class = with_empty_class(embedding, labels, rows, k, seed)

`with_empty_class` gives the flagged boxes a class: the class most of them already share when
the clustering had made it mostly theirs; otherwise a class of their own, the other particles
being clustered again into one class fewer.
"""

from __future__ import annotations

import numpy as np
import torch

from worker.engine.cluster import kmeans_labels
from worker.engine.likelihood import expectation, on_grid
from worker.engine.poses import FINE_STEP, SHIFT_RADIUS, EmState, angle_grid

NULL_BOXES = 1000  # pure-noise boxes scored to place the threshold
NULL_QUANTILE = 0.9  # the threshold: about this share of empty boxes score at or below it
MIN_EMPTY_FRACTION = 0.02  # fewer flagged boxes than this share of the stack form no class ...
MIN_EMPTY = 20  # ... nor fewer than this many


def noise_boxes(sigma2: torch.Tensor, n: int, size: int, seed: int, device=None) -> torch.Tensor:
    """(n, size, size) Gaussian noise whose power per ring is sigma2 (per pixel, as the E-step's)."""
    generator = torch.Generator().manual_seed(seed)
    white = torch.randn((n, size, size), generator=generator).to(device)
    amplitude = on_grid(sigma2.to(device).clamp(min=0).sqrt(), size)
    return torch.fft.irfft2(torch.fft.rfft2(white) * amplitude, s=(size, size))


def empty_threshold(images: torch.Tensor, state: EmState, ctfs, seed: int) -> float:
    """The log-likelihood that NULL_QUANTILE of empty boxes stay at or below."""
    size, n = images.shape[-1], len(images)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(NULL_BOXES, n), replace=False))
    boxes = noise_boxes(state.sigma2, len(rows), size, seed, images.device)
    posterior = expectation(
        boxes,
        ctfs.take(rows),
        state.references,
        state.sigma2,
        state.log_prior,
        angle_grid(FINE_STEP, images.device),
        SHIFT_RADIUS,
    )
    return float(torch.quantile(posterior.log_likelihood.double(), NULL_QUANTILE))


def empty_rows(images: torch.Tensor, state: EmState, ctfs, seed: int) -> np.ndarray | None:
    """Which particles look like empty boxes (bool (N,)), or None when they are too few to make
    a class of their own: a clean stack then keeps every class for its views."""
    threshold = empty_threshold(images, state, ctfs, seed)
    empty = (state.posterior.log_likelihood <= threshold).cpu().numpy()
    if empty.sum() < max(MIN_EMPTY, MIN_EMPTY_FRACTION * len(empty)):
        return None
    return empty


def with_empty_class(
    embedding: np.ndarray, labels: np.ndarray, empty: np.ndarray, k: int, seed: int, device=None
) -> tuple[np.ndarray, int]:
    """Labels (N,) in [0, k) in which the `empty` boxes share one class, and that class."""
    counts = np.bincount(labels[empty], minlength=k)
    host = int(counts.argmax())
    if counts[host] > 0.5 * np.count_nonzero(labels == host):  # already mostly empty boxes
        out = labels.copy()
        out[empty] = host
        return out, host
    out = np.full(len(labels), k - 1, dtype=labels.dtype)
    out[~empty] = kmeans_labels(embedding[~empty], k - 1, seed, device)
    return out, k - 1
