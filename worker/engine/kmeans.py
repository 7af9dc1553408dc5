"""KMeans in torch, on the features' device: greedy k-means++ seeding, then Lloyd iterations,
best of a few seedings (as scikit-learn's KMeans does, in torch's own thread pool; see the
README's "KMeans" benchmark for why not scikit-learn's).

Deterministic for a seed: the random draws come from a CPU generator, class sums are taken
with index_add_ on the CPU (sequential) and with a one-hot matrix product on a GPU (index_add_
there adds in a varying order).
"""

from __future__ import annotations

import math

import numpy as np
import torch

CHUNK_ROWS = 65_536  # points whose distances to every centre are held at once
MAX_ITERATIONS = 300
SAMPLE = 100_000  # points the seedings are tried on; the best one's centres then start on all
TOLERANCE = 1e-4  # centre movement, relative to the features' mean variance (scikit-learn's)


def _nearest(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's nearest centre and its squared distance, a chunk of points at a time."""
    c_sq = (centres * centres).sum(1)
    labels = torch.empty(len(x), dtype=torch.int64, device=x.device)
    distances = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for start in range(0, len(x), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        d = torch.addmm(c_sq, x[rows], centres.T, alpha=-2)  # |x|^2 added to the minimum only
        distances[rows], labels[rows] = d.min(1)
    return labels, distances.add_(x_sq).clamp_(min=0)


def _class_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Each class's sum of points, in float64, a chunk of points at a time."""
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, len(x), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        if x.device.type == "cpu":
            sums.index_add_(0, labels[rows], x[rows].double())
        else:
            sums += torch.nn.functional.one_hot(labels[rows], k).double().T @ x[rows].double()
    return sums


def _seed_centres(x: torch.Tensor, x_sq: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (Arthur and Vassilvitskii 2007; 2 + ln k candidates a step, the best kept)."""
    n, trials = len(x), 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    closest = (x_sq - 2 * x @ x[first] + x_sq[first]).clamp_(min=0)
    for _ in range(1, k):
        cumulative = closest.double().cumsum(0)
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws).clamp_(max=n - 1)
        to_candidates = torch.addmm(x_sq[candidates], x, x[candidates].T, alpha=-2).add_(x_sq[:, None])
        reached = torch.minimum(closest[:, None], to_candidates.clamp_(min=0))
        best = int(reached.sum(0, dtype=torch.float64).argmin())
        centres.append(x[candidates[best]])
        closest = reached[:, best].contiguous()
    return torch.stack(centres)


def _lloyd(x, x_sq, centres, tolerance) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd iterations until no label changes or the centres move less than `tolerance`; an
    empty class takes the points farthest from their centres. Returns labels, centres, inertia."""
    k = len(centres)
    labels, distances = _nearest(x, x_sq, centres)
    for _ in range(MAX_ITERATIONS):
        counts = torch.bincount(labels, minlength=k)
        moved = (_class_sums(x, labels, k) / counts.clamp(min=1)[:, None]).to(x.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            moved[empty] = x[distances.topk(len(empty)).indices]
        shift = float(((moved - centres) ** 2).sum())
        centres = moved
        previous = labels
        labels, distances = _nearest(x, x_sq, centres)
        if torch.equal(labels, previous) or shift <= tolerance:
            break
    return labels, centres, float(distances.sum(dtype=torch.float64))


def _sample_rows(n: int, sample: int, generator: torch.Generator) -> torch.Tensor | None:
    return None if n <= sample else torch.randperm(n, generator=generator)[:sample].sort().values


def kmeans(
    features, k: int, seed: int, inits: int, *, sample: int = SAMPLE, device=None
) -> tuple[np.ndarray, float]:
    """Labels 0..k-1 (in centre order) and inertia: the best of `inits` k-means++ seedings and
    Lloyd runs on at most `sample` points, then Lloyd on every point from its centres."""
    x = torch.as_tensor(features, device=device).float()
    x = x - x.mean(0)  # centred, as scikit-learn does, for accurate distances by dot products
    x_sq = (x * x).sum(1)
    tolerance = TOLERANCE * float(x.var(0).mean()) if len(x) > 1 else 0.0
    generator = torch.Generator().manual_seed(seed)
    rows = _sample_rows(len(x), sample, generator)
    some, some_sq = (x, x_sq) if rows is None else (x[rows.to(x.device)], x_sq[rows.to(x.device)])
    best = (None, None, math.inf)
    for _ in range(inits):
        found = _lloyd(some, some_sq, _seed_centres(some, some_sq, k, generator), tolerance)
        if found[2] < best[2]:
            best = found
    labels, _, inertia = best if rows is None else _lloyd(x, x_sq, best[1], tolerance)
    return labels.cpu().numpy(), inertia
