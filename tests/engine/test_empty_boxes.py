"""Boxes that look empty: the noise boxes the threshold is measured on have the fitted noise
spectrum, the flagged boxes get a class, and a stack without junk keeps every class for its views."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worker.engine import outputs
from worker.engine.commands.classify import class_table_lines
from worker.engine.config import ClassifyConfig
from worker.engine.empty_boxes import noise_boxes, with_empty_class
from worker.engine.io.particles import ParticleStack
from worker.engine.likelihood import ring_mean
from worker.engine.pipeline import classify
from worker.engine.simulate import simulate, write_simulation
from worker.engine.simulate_junk import JUNK_KINDS

pytestmark = pytest.mark.slow


def test_noise_boxes_carry_the_noise_spectrum_they_are_given():
    size = 32
    sigma2 = torch.linspace(4.0, 0.5, size // 2 + 1)  # pink-like: more power at low frequency
    boxes = noise_boxes(sigma2, 4000, size, seed=3)
    power = ring_mean(torch.fft.rfft2(boxes).abs().pow(2).mean(0), size) / size**2
    assert torch.allclose(power[1:], sigma2[1:], rtol=0.05), (power, sigma2)


def test_flagged_boxes_join_the_class_they_already_dominate():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    empty = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 1], bool)  # class 1 is mostly empty boxes
    out, empty_class = with_empty_class(np.zeros((10, 2), np.float32), labels, empty, 3, seed=0)
    assert empty_class == 1
    assert (out[empty] == 1).all() and np.array_equal(out[~empty], labels[~empty])


def test_scattered_flagged_boxes_get_a_class_of_their_own():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = rng.integers(0, 3, 300)
    embedding = (centres[truth] + rng.normal(size=(300, 2))).astype(np.float32)
    empty = np.zeros(300, bool)
    empty[::10] = True  # spread over all three classes, a minority in each
    out, empty_class = with_empty_class(embedding, truth, empty, 4, seed=0)
    assert empty_class == 3 and (out[empty] == 3).all()
    kept = ~empty
    # The others are clustered again into three classes: the three centres.
    assert len(np.unique(out[kept])) == 3
    for view in range(3):
        assert len(np.unique(out[kept & (truth == view)])) == 1


def _run(tmp_path, junk: float, rounds: int = 1) -> tuple[dict, np.ndarray, object]:
    sim = simulate(
        n=600, k=3, box=32, snr=0.1, rotate=True, shift=2.0, ctf=True, pixel_size=4.0, seed=11, junk=junk
    )
    paths = write_simulation(sim, tmp_path / "data")
    config = ClassifyConfig(
        method="pose-em", cluster_num=4, round_num=rounds, size=32, device="cpu", umap=False
    )
    with ParticleStack.open(paths["star"]) as stack:
        result = classify(stack, config, tmp_path / "out")
    info = json.loads((tmp_path / "out" / f"round_{rounds:02d}" / "round.json").read_text())
    return info, result.labels, sim


def test_only_the_last_round_gives_the_empty_boxes_a_class(tmp_path):
    info, labels, sim = _run(tmp_path, junk=0.25, rounds=2)
    first = json.loads((tmp_path / "out" / "round_01" / "round.json").read_text())
    assert first["empty_boxes"] > 0 and first["empty_class"] is None  # flagged, no class yet
    assert info["empty_class"] is not None
    assert (sim.views[labels == info["empty_class"]] < 0).mean() > 0.5


def test_empty_ice_ends_up_in_a_class_of_its_own(tmp_path):
    info, labels, sim = _run(tmp_path, junk=0.25)
    empty_class = info["empty_class"]
    assert empty_class is not None
    members = labels == empty_class
    junk = sim.views < 0
    ice = sim.junk_kinds == JUNK_KINDS.index("ice")
    assert members[ice].mean() >= 0.8, members[ice].mean()
    assert junk[members].mean() > 0.75  # the class is junk, not a view
    assert members[~junk].mean() < 0.03  # and it costs the views few particles
    # classes.json, the gallery's captions and the CLI's table say which class it is
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert [row["class"] for row in classes if row["empty"]] == [empty_class + 1]
    caption = outputs.captions(classes, 4.0, True)[empty_class]
    assert caption.startswith(f"#{empty_class + 1} empty ")
    table = class_table_lines(tmp_path / "out")
    assert [line.split()[0] for line in table if line.endswith("empty boxes")] == [str(empty_class + 1)]


def test_a_stack_without_junk_keeps_every_class_for_its_views(tmp_path):
    info, labels, sim = _run(tmp_path, junk=0.0)
    assert info["empty_class"] is None
    assert info["empty_boxes"] < 0.02 * sim.n
    assert not any(row["empty"] for row in json.loads((tmp_path / "out" / "classes.json").read_text()))
    assert len(np.unique(labels)) == 4
