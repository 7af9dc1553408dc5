"""Pieces of CPU work side by side: the same results as one after another, reports from the
calling thread only and in order, failures raised, threads given back."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch

from worker.engine.side_by_side import side_by_side

CPU = torch.device("cpu")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs with OMP_NUM_THREADS=1: one thread, one after another
    yield
    torch.set_num_threads(before)


@dataclass
class Progress:
    value: int


def piece(i: int, report) -> tuple[torch.Tensor, int, str]:
    """A seeded matrix product, reporting a changing object after each of three steps."""
    generator = torch.Generator().manual_seed(i)
    a = torch.randn(300, 300, generator=generator)
    progress = Progress(0)
    for step in range(3):
        a = torch.tanh(a @ a / 30)
        progress.value = step
        if report is not None:
            report(i * 10 + step, progress)
    return a, torch.get_num_threads(), threading.current_thread().name


def test_the_pieces_run_at_once_with_the_results_of_one_after_another(two_threads):
    reports = []
    together = side_by_side(
        piece, 2, CPU, lambda step, p: reports.append((threading.current_thread(), step, p.value))
    )
    alone = [piece(i, None) for i in range(2)]
    for (mine, threads, _name), (expected, _, _) in zip(together, alone, strict=True):
        torch.testing.assert_close(mine, expected)
        assert threads == 1  # an equal share of the two threads each
    assert together[0][2] == threading.current_thread().name != together[1][2]
    assert torch.get_num_threads() == 2  # given back
    # every report from the calling thread; piece 1's after piece 0's, with the values they had
    assert {thread for thread, *_ in reports} == {threading.current_thread()}
    assert [(step, value) for _, step, value in reports] == [
        (0, 0),
        (1, 1),
        (2, 2),
        (10, 0),
        (11, 1),
        (12, 2),
    ]


def test_one_thread_or_a_single_piece_runs_them_one_after_another():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names = [name for _, _, name in side_by_side(piece, 3, CPU, None)]
    finally:
        torch.set_num_threads(before)
    assert set(names) == {threading.current_thread().name}


def test_a_failing_piece_stops_the_others_and_is_raised(two_threads):
    reached = []

    def failing(i: int, report):
        if i == 0:
            raise ValueError("piece 0 failed")
        for step in range(1000):  # stopped at its next report, long before the end
            report(step)
            reached.append(step)
            threading.Event().wait(0.01)

    with pytest.raises(ValueError, match="piece 0 failed"):
        side_by_side(failing, 2, CPU, None)
    assert len(reached) < 1000 and torch.get_num_threads() == 2


def test_a_helpers_failure_is_raised_after_the_callers_piece(two_threads):
    done = []

    def work(i: int, report):
        if i == 1:
            raise RuntimeError("piece 1 failed")
        done.append(i)
        return i

    with pytest.raises(RuntimeError, match="piece 1 failed"):
        side_by_side(work, 2, CPU, None)
    assert done == [0]
