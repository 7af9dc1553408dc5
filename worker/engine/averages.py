"""Class averages. An Averager turns images and labels into one image per class.

`average_at` gives the last `average`'s classes again from other images of the same particles,
e.g. the full-size ones (the poses or alignments found at the model size, scaled to their box).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch


class Averager(Protocol):
    def average(self, images: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
        """(N, 1, S, S) images and labels 0..k-1 -> (k, S, S) float32 averages."""
        ...

    def average_at(self, images: torch.Tensor, labels: np.ndarray, k: int, pixel_size: float) -> np.ndarray:
        """The same particles at another box (N, 1, B, B) and pixel size -> (k, B, B) averages,
        with whatever the last `average` found (alignments, poses) carried over."""
        ...


BATCH = 4096  # images summed at a time: float64 copies of a batch, never of the stack


def class_means(images: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    index = torch.as_tensor(labels, device=flat.device, dtype=torch.long)
    sums = torch.zeros((k, flat.shape[1]), dtype=torch.float64, device=flat.device)
    for start in range(0, len(flat), BATCH):  # the same additions in the same order as at once
        rows = slice(start, start + BATCH)
        sums.index_add_(0, index[rows], flat[rows].to(torch.float64))
    counts = torch.bincount(index, minlength=k).clamp(min=1).to(torch.float64)
    means = (sums / counts[:, None]).to(torch.float32)
    return means.reshape((k, *images.shape[-2:])).cpu().numpy()


BATCH_BYTES = 256 << 20  # images moved and summed at a time by batched_class_means


def batched_class_means(
    images: torch.Tensor,
    labels: np.ndarray,
    k: int,
    move: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
    factor: int = 1,
) -> np.ndarray:
    """Class means of (N, 1, B, B) images a batch at a time, each batch first passed through
    `move(batch (b, B, B), rows)` when given; `factor` is how many times an image's size `move`
    needs as working space. Memory: the k sums and one batch, never a copy of all N."""
    size = images.shape[-1]
    flat_images = images.reshape(len(images), size, size)
    index = torch.as_tensor(np.asarray(labels), device=images.device, dtype=torch.long)
    sums = torch.zeros((k, size * size), dtype=torch.float64, device=images.device)
    batch = max(1, BATCH_BYTES // (4 * size * size * factor))
    for start in range(0, len(images), batch):
        rows = slice(start, min(len(images), start + batch))
        chunk = flat_images[rows].float()
        if move is not None:
            chunk = move(chunk, rows)
        sums.index_add_(0, index[rows], chunk.reshape(len(chunk), -1).to(torch.float64))
    counts = torch.bincount(index, minlength=k).clamp(min=1).to(torch.float64)
    return (sums / counts[:, None]).to(torch.float32).reshape(k, size, size).cpu().numpy()


class MeanAverager:
    """The reference method's averages: the plain mean of each class's members."""

    name = "mean"

    def average(self, images: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
        return class_means(images, labels, k)

    def average_at(self, images: torch.Tensor, labels: np.ndarray, k: int, pixel_size: float) -> np.ndarray:
        return batched_class_means(images, labels, k)
