"""Over-clustering and the merge back: twin classes (one view split by noise) are joined,
classes the posterior keeps apart stay apart."""

import numpy as np
import torch

from worker.engine.merge import confusion, merge_groups
from worker.engine.pose import first_iterations, over_clustered


def _posterior(blocks: list[list[float]], per_class: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """class_probs where each particle of class a puts blocks[a][b] on class b."""
    probs = torch.tensor(blocks, dtype=torch.float32)
    probs = probs / probs.sum(1, keepdim=True)
    best = torch.arange(len(blocks)).repeat_interleave(per_class)
    return probs[best], best


def test_twin_classes_merge_and_distinct_ones_stay_apart():
    # classes 0 and 3 are one view split in two, so are 1 and 4; class 2 is a view of its own
    # that shares a little probability with class 1 (a close view, kept apart)
    blocks = [
        [0.6, 0.0, 0.0, 0.4, 0.0],
        [0.0, 0.7, 0.01, 0.0, 0.29],
        [0.0, 0.01, 0.99, 0.0, 0.0],
        [0.35, 0.0, 0.0, 0.65, 0.0],
        [0.0, 0.3, 0.0, 0.0, 0.7],
    ]
    probs, best = _posterior(blocks)
    table = confusion(probs, best)
    assert np.allclose(table, table.T) and table[0, 3] == np.float32(0.4)
    groups = merge_groups(probs, best, 3)
    assert groups.tolist() == [0, 1, 2, 0, 1]  # numbered by each group's first class
    assert merge_groups(probs, best, 5).tolist() == [0, 1, 2, 3, 4]


def test_no_more_classes_than_asked_means_nothing_to_merge():
    probs, best = _posterior([[0.9, 0.1], [0.2, 0.8]])
    assert merge_groups(probs, best, 2).tolist() == [0, 1]


def test_round_one_over_clusters_only_while_each_class_keeps_enough_particles():
    assert over_clustered(10, 2000) == 20
    assert over_clustered(10, 700) == 14  # 50 particles a class at most
    assert over_clustered(10, 300) == 10  # never fewer than asked
    assert first_iterations(2000, 10) > first_iterations(300, 10)  # the merged classes' iterations


def test_classes_the_em_left_empty_take_no_group_of_their_own():
    # Views A (classes 0 and 1, twins), B (2), C (3) and D (4 and 5, twins); classes 6 and 7
    # emptied out during the EM. At high SNR the posterior is certain, so nothing but the twins
    # shares any probability: every other distance ties, the empty classes' included.
    blocks = [
        [0.75, 0.25, 0, 0, 0, 0, 0, 0],
        [0.25, 0.75, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0.7, 0.3, 0, 0],
        [0, 0, 0, 0, 0.3, 0.7, 0, 0],
    ]
    probs, best = _posterior(blocks)  # 8 classes; no particle has 6 or 7 as its best
    groups = merge_groups(probs, best, 4)
    assert len(groups) == 8
    assert groups[:6].tolist() == [0, 0, 1, 2, 3, 3]
