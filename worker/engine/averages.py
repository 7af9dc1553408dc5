"""Class averages. An Averager turns images and labels into one image per class."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Averager(Protocol):
    def average(self, images: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
        """(N, 1, S, S) images and labels 0..k-1 -> (k, S, S) float32 averages."""
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


class MeanAverager:
    """The reference method's averages: the plain mean of each class's members."""

    name = "mean"

    def average(self, images: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
        return class_means(images, labels, k)
