"""Progress of a run as small typed events, handed to a callback.

The command line turns them into progress bars; the worker turns them into database rows that
the page follows live. A callback may raise `JobCancelled` to stop the run between batches: the
engine calls it at least once a second while it trains or embeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RoundStarted:
    round: int  # 1-based
    round_num: int
    pairs_total: int  # pairs this round will train on (epochs * N)
    epochs: int = 1  # the round's own epochs: epoch_num, at most 5 for pose, 1 pass for pose-em


@dataclass(frozen=True)
class LossPoint:
    round: int
    epoch: int  # 1-based
    step: int  # batches done in this round
    pairs_done: int  # pairs done in this round
    loss: float  # mean loss over the batches since the previous point


@dataclass(frozen=True)
class EpochDone:
    round: int
    epoch: int
    loss: float  # mean loss of the epoch
    seconds: float


@dataclass(frozen=True)
class EmbedProgress:
    round: int
    done: int  # particles embedded so far
    total: int


@dataclass(frozen=True)
class StageProgress:
    """A stage of a round beyond training and embedding, e.g. "umap" (the last round's UMAP view)."""

    round: int
    stage: str
    done: int  # particles done so far (EM iterations for "refine")
    total: int


@dataclass(frozen=True)
class RoundDone:
    round: int  # 0: the initial classes of a run of 0 rounds
    round_num: int
    counts: list[int]  # members per class, class 1 first
    seconds: float
    loss: float | None  # mean loss of the last epoch (None for round 0, the initial classes)
    timings: dict[str, float] = field(default_factory=dict)
    churn: float | None = 0.0  # share of particles that changed class since the previous round
    scores: dict[str, float] = field(default_factory=dict)  # e.g. mean_log_likelihood (pose methods)


Event = RoundStarted | LossPoint | EpochDone | EmbedProgress | StageProgress | RoundDone
Callback = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The callback used when nobody listens."""
