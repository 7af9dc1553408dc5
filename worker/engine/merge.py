"""Over-clustering, then merging the classes that the data cannot tell apart.

Two views a few degrees apart look alike through SNR 0.1 noise, and an EM with exactly K
classes tends to put both in one class while it splits another view in two. With more classes
than asked for, close views get classes of their own, and the surplus classes are copies of one
view that differ only by noise. The posterior tells them apart: a particle of a surplus copy
keeps much of its probability on its twin, a particle of a distinct view almost none on the
other view's class. (The references' own aligned correlations did not: two views 8-12 degrees
apart correlated 0.95-0.97, as much as two halves of one view.)

    groups = merge_groups(posterior.class_probs, posterior.classes[:, 0], k)   # (M,) in [0, k)
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

FLOOR = 1e-9  # probability below which two classes count as fully distinct


def confusion(class_probs: torch.Tensor, best: torch.Tensor) -> np.ndarray:
    """(M, M): the mean posterior probability of class b among the particles whose most
    probable class is a, symmetrised by the larger of (a, b) and (b, a)."""
    m = class_probs.shape[1]
    sums = torch.zeros((m, m), dtype=torch.float64, device=class_probs.device)
    sums.index_add_(0, best, class_probs.double())
    counts = torch.bincount(best, minlength=m).double().clamp(min=1)
    mean = (sums / counts[:, None]).cpu().numpy()
    return np.maximum(mean, mean.T)


def merge_groups(class_probs: torch.Tensor, best: torch.Tensor, k: int) -> np.ndarray:
    """Each of the M >= k classes' group in [0, k): average-linkage clustering of the distance
    -log(confusion), cut at k groups, numbered in the order of their first class.

    Only the classes that are some particle's most probable one take part: a class the EM left
    empty is as far from every other as two distinct views at high SNR, and given a group of
    its own it forced two views into one (it joins group 0; no particle carries it)."""
    m = class_probs.shape[1]
    if m <= k:
        return np.arange(m)
    held = np.flatnonzero(torch.bincount(best, minlength=m).cpu().numpy() > 0)
    groups = np.zeros(m, dtype=int)
    if len(held) <= k:
        groups[held] = np.arange(len(held))
        return groups
    distance = -np.log(confusion(class_probs, best)[np.ix_(held, held)] + FLOOR)
    distance -= np.diag(np.diag(distance))
    tree = linkage(squareform(np.maximum(distance, 0.0), checks=False), method="average")
    raw = fcluster(tree, t=k, criterion="maxclust")
    _, first = np.unique(raw, return_index=True)
    number = {raw[i]: g for g, i in enumerate(sorted(first))}
    groups[held] = [number[r] for r in raw]
    return groups
