"""The "invariant" method: classes that do not depend on a particle's in-plane angle or shift.

Each particle is described by how well it matches each of R = 20 references once turned and
moved into its best pose: a 20-d profile of aligned correlations, invariant to rotation and
shift by construction. The references are learned without a reference model: they start as
aligned averages of groups found on a rotation-invariant polar-Fourier descriptor, then a few
rounds of multi-reference alignment refine them (each particle joins the reference it matches
best; each reference becomes the aligned average of its members). Particles of one view match
the same references, so KMeans on the profiles (the pipeline's step) groups views, not angles.

Why this and not augmented contrastive training (by measurement, README "methods"): on 4 views
with uniform rotation, CTF and SNR 0.1, the polar-Fourier descriptor alone reached ARI 0.23,
and plain multi-reference alignment with k references stalled at 0.63 with two views merged;
profiles over R = 20 aligned references then clustered by KMeans are what met the bar. The
reference Siamese network cannot learn rotation invariance from a few epochs of CPU training.

References are averaged at 32 px and scoring runs at 24 px (Fourier-cropped) with a 10 degree
grid: SNR 0.1 leaves nothing finer to use. Batched over particles, one matrix product per
reference.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from worker.engine.align import align_class, best_template, template_bank
from worker.engine.config import ClassifyConfig
from worker.engine.events import Callback, EpochDone, LossPoint
from worker.engine.model import EMBEDDING_DIM
from worker.engine.preprocess import fourier_crop

REFERENCE_SIZE = 32  # px: references are aligned averages at this size
SCORE_SIZE = 24  # px: images are scored at this size
SCORE_STEP = 10.0  # degrees between the rotated references
SCORE_SHIFT = 0.1  # max shift as a fraction of the box
MRA_ITERATIONS = 3
ALIGN_ITERATIONS = 2
BATCH = 2048


def polar_descriptor(images: torch.Tensor, rings: int = 24, angles: int = 64) -> np.ndarray:
    """Rotation-invariant features: |FFT along the angle| of a polar resampling about the centre."""
    size = images.shape[-1]
    device = images.device
    radius = torch.linspace(1.0, size / 2 - 1, rings, device=device)
    theta = torch.arange(angles, device=device) * (2 * math.pi / angles)
    x = radius[:, None] * torch.cos(theta)[None] + size // 2
    y = radius[:, None] * torch.sin(theta)[None] + size // 2
    grid = torch.stack([(2 * x + 1) / size - 1, (2 * y + 1) / size - 1], -1)[None]
    parts = []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH].reshape(-1, 1, size, size).float()
        polar = F.grid_sample(batch, grid.expand(len(batch), -1, -1, -1), align_corners=False)
        parts.append(torch.fft.rfft(polar[:, 0], dim=-1).abs()[..., : angles // 4].reshape(len(batch), -1))
    return torch.cat(parts).cpu().numpy()


def initial_groups(images: torch.Tensor, groups: int, seed: int) -> np.ndarray:
    from worker.engine.cluster import kmeans_labels, pca_features

    features = polar_descriptor(images)
    return kmeans_labels(pca_features(features, seed, 20), groups, seed)


def reference_averages(images: torch.Tensor, groups: np.ndarray, count: int) -> torch.Tensor:
    """Aligned average of each group (an empty group gets a random member as its reference)."""
    size = images.shape[-1]
    references = torch.zeros((count, size, size), device=images.device)
    rng = np.random.default_rng(count)
    for g in range(count):
        members = np.flatnonzero(groups == g)
        if len(members) == 0:
            references[g] = images[int(rng.integers(len(images)))].reshape(size, size)
            continue
        index = torch.as_tensor(members, device=images.device)
        average, _ = align_class(images[index], iterations=ALIGN_ITERATIONS)
        references[g] = average
    return references


def aligned_scores(small: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """(N, R) cosine of each small image with each reference at its best angle and shift."""
    size = small.shape[-1]
    angles = torch.arange(0.0, 360.0, SCORE_STEP, device=small.device)
    radius = max(1, round(SCORE_SHIFT * size))
    small_refs = fourier_crop(references, size)
    norms = small.reshape(len(small), -1).norm(dim=1).clamp(min=1e-12)
    scores = torch.empty((len(small), len(references)), device=small.device)
    for r, reference in enumerate(small_refs):
        bank = template_bank(reference, angles, radius)
        for start in range(0, len(small), BATCH):
            *_, best = best_template(small[start : start + BATCH], bank)
            scores[start : start + BATCH, r] = best
    return (scores / norms[:, None]).cpu().numpy()


class InvariantMethod:
    """Rotation- and shift-invariant embeddings: aligned-correlation profiles (see module doc)."""

    name = "invariant"

    def __init__(self, references: int = EMBEDDING_DIM) -> None:
        self.references = references
        self._groups: np.ndarray | None = None  # kept between rounds of one run

    def train_round(
        self,
        images: torch.Tensor,
        labels: np.ndarray,
        config: ClassifyConfig,
        round_index: int,
        generator: torch.Generator,
        on_event: Callback,
    ) -> tuple[np.ndarray, dict]:
        """Returns the (N, 20) profile embedding and the round's state (its loss)."""
        images = images.reshape(-1, images.shape[-2], images.shape[-1]).float()
        count = min(self.references, len(images))
        if self._groups is None or len(self._groups) != len(images):
            self._groups = initial_groups(images, count, config.seed + round_index)
        work = fourier_crop(images, min(REFERENCE_SIZE, images.shape[-1]))
        small = fourier_crop(images, min(SCORE_SIZE, images.shape[-1]))
        scores = np.zeros((len(images), count), dtype=np.float32)
        loss = float("nan")
        for iteration in range(1, MRA_ITERATIONS + 1):
            started = time.perf_counter()
            references = reference_averages(work, self._groups, count)
            scores = aligned_scores(small, references)
            self._groups = scores.argmax(1)
            loss = float(1.0 - scores.max(1).mean())
            on_event(LossPoint(round_index, iteration, iteration, iteration * len(images), loss))
            on_event(EpochDone(round_index, iteration, loss, time.perf_counter() - started))
        embedding = np.zeros((len(images), EMBEDDING_DIM), dtype=np.float32)
        # Standardised columns: every reference counts alike in KMeans.
        centred = scores - scores.mean(0)
        embedding[:, :count] = centred / np.maximum(centred.std(0), 1e-6)
        return embedding, {"loss": loss}
