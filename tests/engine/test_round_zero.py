"""`--round_num 0`: the initial classes written as round 0 through the normal outputs, quickly;
a later run with more rounds on the same folder goes on from them as an unbroken run would."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from cryoclust.cli import main
from worker.engine.cluster import initial_labels
from worker.engine.config import ClassifyConfig
from worker.engine.events import RoundDone, StageProgress
from worker.engine.io.particles import ParticleStack
from worker.engine.outputs import completed_rounds, read_labels_csv
from worker.engine.pipeline import classify
from worker.engine.preprocess import preprocess
from worker.engine.simulate import read_truth, simulate, write_simulation


@pytest.fixture(scope="module")
def easy_set(tmp_path_factory):
    """300 particles of 4 well separated views at SNR 1, box 32: PCA + KMeans finds them."""
    return write_simulation(simulate(n=300, k=4, box=32, snr=1.0, seed=5), tmp_path_factory.mktemp("easy"))


def test_zero_rounds_write_the_initial_classes_as_round_zero(easy_set, tmp_path):
    out = tmp_path / "run"
    events = []
    config = ClassifyConfig(
        cluster_num=4, round_num=0, size=32, device="cpu", umap=False
    )  # the default method
    with ParticleStack.open(easy_set["star"]) as stack:
        result = classify(stack, config, out, events.append)
        pixels = preprocess(stack, 32)[:, 0].numpy()
    assert completed_rounds(out) == [0]
    progress = [e for e in events if isinstance(e, StageProgress)]
    assert {e.stage for e in progress} == {"preprocess", "initial labels"}
    events = [e for e in events if not isinstance(e, StageProgress)]
    assert [type(e) for e in events] == [RoundDone]  # no training, no round started
    assert events[0].round == 0 and events[0].loss is None and events[0].churn is None
    # The labels are the initial PCA + KMeans labels (float16 storage: the same classes).
    expected = initial_labels(pixels, 4, 0)
    assert adjusted_rand_score(expected, result.labels) == 1.0
    assert adjusted_rand_score(read_truth(easy_set["truth"]), result.labels) == 1.0
    folder = out / "round_00"
    assert np.array_equal(read_labels_csv(folder / "labels.csv"), result.labels)
    embedding, flat = np.load(folder / "embedding.npy"), np.load(folder / "embedding_2d.npy")
    assert embedding.shape == (300, 20) and flat.shape == (300, 2) and flat.dtype == np.float32
    assert np.array_equal(flat, embedding[:, :2])  # the first two principal components
    assert flat[:, 0].var() >= flat[:, 1].var() > embedding[:, 19].var()
    with mrcfile.open(folder / "class_averages.mrcs", permissive=False) as mrc:
        assert mrc.data.shape == (4, 32, 32)
        for c in range(4):  # plain class means of the preprocessed particles
            members = pixels[result.labels == c]
            assert np.allclose(mrc.data[c], members.mean(0), atol=2e-3)
    assert (folder / "class_averages.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((folder / "round.json").read_text())
    assert info["round"] == 0 and info["churn"] is None and info["loss"] is None
    assert sum(info["counts"]) == 300
    assert list(info["timings"]) == ["preprocess", "initial_labels", "averages"]
    assert json.loads((folder / "loss.json").read_text()) == []
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0] and summary["full_size_averages"] is None
    assert "_rlnClassNumber" in (out / "particles.star").read_text()
    assert not (out / "model.pt").exists()


def test_more_rounds_later_go_on_from_round_zero_as_an_unbroken_run(easy_set, tmp_path):
    base = dict(
        method="reference", cluster_num=4, epoch_num=1, batch_size=32, size=32, device="cpu", umap=False
    )
    with ParticleStack.open(easy_set["star"]) as stack:
        classify(stack, ClassifyConfig(round_num=0, **base), tmp_path / "stepwise")
        resumed = classify(stack, ClassifyConfig(round_num=2, **base), tmp_path / "stepwise")
        unbroken = classify(stack, ClassifyConfig(round_num=2, **base), tmp_path / "unbroken")
    assert completed_rounds(tmp_path / "stepwise") == [0, 1, 2]
    assert [r["round"] for r in resumed.rounds] == [0, 1, 2]
    assert np.array_equal(resumed.labels, unbroken.labels)
    for name in ("embedding.npy", "embedding_2d.npy"):
        assert np.array_equal(
            np.load(tmp_path / "stepwise" / "round_02" / name),
            np.load(tmp_path / "unbroken" / "round_02" / name),
        )
    # Once-per-run stages are timed in the first round a run writes: the resumed run preprocessed
    # again but took its labels from round 0; the unbroken one did both before round 1.
    per_round = ["train_embed", "kmeans", "averages"]
    stages = {
        name: [list(r["timings"]) for r in run.rounds]
        for name, run in (("stepwise", resumed), ("unbroken", unbroken))
    }
    assert stages["unbroken"] == [["preprocess", "initial_labels", *per_round], per_round]
    assert stages["stepwise"][1:] == [["preprocess", *per_round], per_round]
    assert all(v >= 0 for r in unbroken.rounds for v in r["timings"].values())


def test_the_command_line_takes_zero_rounds(easy_set, tmp_path, capsys):
    out = tmp_path / "cli"
    status = main(
        [
            "classify",
            str(easy_set["particles"]),
            "-o",
            str(out),
            "-r",
            "0",
            "-c",
            "4",
            "-g",
            "cpu",
            "-q",
            "--no-umap",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "round 0 (initial classes): " in printed and "done on cpu" in printed
    assert completed_rounds(out) == [0]


def test_a_negative_round_count_is_refused(easy_set, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["classify", str(easy_set["particles"]), "-o", str(tmp_path / "x"), "-r", "-1"])
    assert exited.value.code == 2
    assert "-r/--round_num: -1: at least 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"round_num=-1 \(at least 0\)"):
        ClassifyConfig(round_num=-1)
    assert not (tmp_path / "x").exists()
