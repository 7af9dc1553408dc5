"""Convergence of the rounds: how many particles changed class, and when to stop early.

KMeans numbers its clusters arbitrarily, so "changed class" is measured after matching each
new class to the previous class it shares most particles with (a one-to-one matching that
maximises the particles kept, the Hungarian method on the two labelings' contingency table).
A relabelled but otherwise identical classification therefore has churn 0.
"""

from __future__ import annotations

import numpy as np


def label_churn(previous: np.ndarray, current: np.ndarray) -> float:
    """The share of particles (0..1) whose class changed between two labelings (0-based)."""
    from scipy.optimize import linear_sum_assignment

    previous, current = np.asarray(previous), np.asarray(current)
    if previous.shape != current.shape:
        raise ValueError(f"labelings differ in length: {previous.shape} and {current.shape}")
    n = len(current)
    if n == 0:
        return 0.0
    size = int(max(previous.max(), current.max())) + 1
    table = np.zeros((size, size), dtype=np.int64)
    np.add.at(table, (previous, current), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    kept = int(table[rows, cols].sum())
    return float(n - kept) / n


def stop_reason(churn: float, threshold: float, round_index: int) -> str | None:
    """Why the rounds stop after `round_index`, or None to go on (threshold 0: never stop)."""
    if threshold > 0 and churn < threshold:
        return f"churn {churn:.3g} < {threshold:g} after round {round_index}"
    return None
