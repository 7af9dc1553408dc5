"""Convergence: label churn per round, class sizes and scores in round.json/summary.json, and
the early stop (`stop_when_churn_below`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoclust.cli import parse_args
from worker.engine.commands.classify import config_from_args
from worker.engine.config import ClassifyConfig
from worker.engine.convergence import label_churn, stop_reason
from worker.engine.events import RoundDone, RoundStarted
from worker.engine.io.particles import ParticleStack
from worker.engine.outputs import read_labels_csv
from worker.engine.pipeline import classify
from worker.engine.simulate import simulate, write_simulation


def test_churn_of_hand_made_labelings():
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    assert label_churn(a, a) == 0.0
    # the same classes under other numbers: nothing changed
    assert label_churn(a, np.array([2, 2, 2, 0, 0, 0, 1, 1, 1, 1])) == 0.0
    # two particles move (one 0 -> 1, one 2 -> 0): 2 of 10
    assert label_churn(a, np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 0])) == pytest.approx(0.2)
    # renumbered and one moved: the matching undoes the renumbering, 1 of 10
    assert label_churn(a, np.array([1, 1, 1, 2, 2, 0, 0, 0, 0, 0])) == pytest.approx(0.1)
    # everything merged into one class: only the largest class keeps its members
    assert label_churn(a, np.zeros(10, dtype=int)) == pytest.approx(0.6)
    # a class that appears only in one labeling (k changes) is handled
    assert label_churn(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 3])) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="labelings differ in length"):
        label_churn(a, a[:5])


def test_stop_reason_text_and_off_switch():
    assert stop_reason(0.004, 0.01, 3) == "churn 0.004 < 0.01 after round 3"
    assert stop_reason(0.02, 0.01, 3) is None
    assert stop_reason(0.0, 0.0, 3) is None  # 0: off, every round runs


def test_the_flag_reaches_the_config():
    args = parse_args(["classify", "x.mrcs", "-o", "out", "--stop-when-churn-below", "0.01"])
    assert config_from_args(args).stop_when_churn_below == 0.01
    assert ClassifyConfig().stop_when_churn_below == 0.0
    with pytest.raises(ValueError, match="stop_when_churn_below"):
        ClassifyConfig(stop_when_churn_below=1.5)


@pytest.fixture(scope="module")
def noisy_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noisy")
    return write_simulation(simulate(n=120, k=4, box=32, snr=0.15, pixel_size=2.0, seed=7), folder)


def _config(**extra):
    values = dict(
        cluster_num=4, epoch_num=1, round_num=3, size=16, seed=1, device="cpu", batch_size=32, umap=False
    )
    return ClassifyConfig(method="reference", **{**values, **extra})


def test_rounds_record_churn_and_sizes_and_the_early_stop_ends_at_the_right_round(noisy_set, tmp_path):
    events = []
    with ParticleStack.open(noisy_set["particles"]) as stack:
        full = classify(stack, _config(), tmp_path / "full", events.append)
    assert full.stopped is None and len(full.rounds) == 3
    summary = json.loads((tmp_path / "full/summary.json").read_text())
    assert summary["stopped"] is None
    churns = [r["churn"] for r in summary["rounds"]]
    for r, info in enumerate(summary["rounds"], start=1):
        assert sum(info["counts"]) == 120 and 0.0 <= info["churn"] <= 1.0
        on_disk = json.loads((tmp_path / f"full/round_{r:02d}/round.json").read_text())
        assert on_disk["churn"] == info["churn"]
    # each churn is the one between consecutive rounds' labels.csv
    labels = [read_labels_csv(tmp_path / f"full/round_{r:02d}/labels.csv") for r in range(1, 4)]
    for r in range(1, 3):
        assert churns[r] == pytest.approx(label_churn(labels[r - 1], labels[r]))
    done = [e for e in events if isinstance(e, RoundDone)]
    assert [e.churn for e in done] == churns

    # a threshold just above round 2's churn (or above every churn) stops at the first round below it
    threshold = min(1.0, max(churns[1] + 1e-6, 1e-6))
    expected = next(r for r, c in enumerate(churns, start=1) if c < threshold)
    events = []
    with ParticleStack.open(noisy_set["particles"]) as stack:
        early = classify(stack, _config(stop_when_churn_below=threshold), tmp_path / "early", events.append)
    assert [e.round for e in events if isinstance(e, RoundStarted)] == list(range(1, expected + 1))
    assert early.stopped == f"churn {churns[expected - 1]:.3g} < {threshold:g} after round {expected}"
    summary = json.loads((tmp_path / "early/summary.json").read_text())
    assert summary["stopped"] == early.stopped and len(summary["rounds"]) == expected
    assert np.array_equal(early.labels, labels[expected - 1])
    # run again on the same folder: it has stopped, no further round runs
    events = []
    with ParticleStack.open(noisy_set["particles"]) as stack:
        again = classify(stack, _config(stop_when_churn_below=threshold), tmp_path / "early", events.append)
    assert not any(isinstance(e, RoundStarted) for e in events) and again.stopped == early.stopped
