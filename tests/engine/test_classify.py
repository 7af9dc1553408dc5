"""End to end: `cryoclust classify` on small simulated stacks, in-process."""

import csv
import io
import json

import mrcfile
import numpy as np
import pytest
import starfile
from sklearn.metrics import adjusted_rand_score

from cryoclust.cli import main, parse_args
from worker.engine.config import ClassifyConfig
from worker.engine.events import EpochDone, LossPoint, RoundDone, RoundStarted, StageProgress
from worker.engine.io.particles import ParticleStack
from worker.engine.pipeline import classify
from worker.engine.simulate import read_truth, simulate, write_simulation


@pytest.fixture(scope="module")
def easy_set(tmp_path_factory):
    """300 particles of 4 well separated views at SNR 1, box 48 (cropped to 32)."""
    folder = tmp_path_factory.mktemp("easy")
    paths = write_simulation(simulate(n=300, k=4, box=48, snr=1.0, pixel_size=2.0, seed=3), folder)
    return paths


def _labels(path):
    with open(path, newline="") as handle:
        return np.array([int(row["class"]) for row in csv.DictReader(handle)])


def test_classify_command_recovers_the_classes_and_writes_every_output(easy_set, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "classify",
        str(easy_set["particles"]),
        "-o",
        str(out),
        "-c",
        "4",
        "-e",
        "3",
        "-r",
        "2",
        "-g",
        "cpu",
        "--size",
        "32",
        "--seed",
        "1",
        "--method",
        "pose",  # the default: the network's epochs and loss points
        "--no-umap",  # the UMAP view is test_umap_view's (numba compiles it once per process)
        "-q",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "round 1/2" in printed and "round 2/2" in printed

    truth = read_truth(easy_set["truth"])
    labels = _labels(out / "round_02" / "labels.csv")
    assert set(labels) <= {1, 2, 3, 4}
    assert adjusted_rand_score(truth, labels) >= 0.9

    for r in (1, 2):
        folder = out / f"round_{r:02d}"
        for name in (
            "labels.csv",
            "embedding.npy",
            "embedding_2d.npy",
            "class_averages.mrcs",
            "class_averages.png",
            "loss.json",
            "classes.json",
            "round.json",
        ):
            assert (folder / name).is_file(), name
        assert np.load(folder / "embedding.npy").shape == (300, 20)
        assert np.load(folder / "embedding_2d.npy").shape == (300, 2)
        assert (folder / "class_averages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        loss = json.loads((folder / "loss.json").read_text())
        assert loss and all(np.isfinite(p["loss"]) for p in loss)
        assert loss[-1]["pairs_done"] == 3 * 300

    averages = out / "class_averages.mrcs"
    assert mrcfile.validate(str(averages), print_file=io.StringIO())
    with mrcfile.open(averages) as mrc:
        assert mrc.header.mode == 2 and mrc.data.shape == (4, 32, 32) and mrc.header.nz == 4
        # averages are at the model size, so the pixel grows by box/size
        assert float(mrc.voxel_size.x) == pytest.approx(2.0 * 48 / 32, rel=1e-4)

    star = starfile.read(out / "particles.star")
    particles = star["particles"] if isinstance(star, dict) else star
    # image names point from OUT back into the input stack, 1-based
    names = list(particles["rlnImageName"][:2])
    assert names[0].startswith("000001@../") and names[1].startswith("000002@../")
    assert names[0].endswith(f"{easy_set['particles'].parent.name}/particles.mrcs")
    assert np.array_equal(particles["rlnClassNumber"].to_numpy(), labels)
    with (
        ParticleStack.open(out / "particles.star") as again,
        ParticleStack.open(easy_set["particles"]) as original,
    ):
        assert np.array_equal(again.read(10, 12), original.read(10, 12))
        assert again.pixel_size == pytest.approx(2.0)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["particles"] == 300 and len(summary["rounds"]) == 2
    assert summary["parameters"]["cluster_num"] == 4
    assert summary["device"] == "cpu" and summary["device_peak_bytes"] is None  # a GPU's peak only
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == ["cryoclust", *argv]
    # the averages' mask, left to the run: 85 % of the 48 px box of 2 Å
    assert config["parameters"]["mask_diameter"] == pytest.approx(0.85 * 48 * 2.0)


def test_runs_with_a_seed_repeat_exactly_and_resume_matches(easy_set, tmp_path):
    # UMAP off: its own seeded layout is tested in test_umap_view; here it would only cost time
    config = ClassifyConfig(
        cluster_num=4, epoch_num=1, round_num=2, size=32, seed=5, device="cpu", umap=False
    )
    with ParticleStack.open(easy_set["particles"]) as stack:
        first = classify(stack, config, tmp_path / "a")
        second = classify(stack, config, tmp_path / "b")
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(
        np.load(tmp_path / "a/round_02/embedding.npy"), np.load(tmp_path / "b/round_02/embedding.npy")
    )

    # a run stopped after round 1 resumes from it and ends exactly where the unbroken one did
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "c", ignore=shutil.ignore_patterns("round_02"))
    events = []
    with ParticleStack.open(easy_set["particles"]) as stack:
        resumed = classify(stack, config, tmp_path / "c", events.append)
    assert [e.round for e in events if isinstance(e, RoundStarted)] == [2]
    assert np.array_equal(resumed.labels, first.labels)
    assert np.array_equal(
        np.load(tmp_path / "c/round_02/embedding.npy"), np.load(tmp_path / "a/round_02/embedding.npy")
    )


def test_events_arrive_in_order(easy_set, tmp_path):
    events = []
    config = ClassifyConfig(
        cluster_num=3,
        epoch_num=2,
        round_num=1,
        size=32,
        device="cpu",
        batch_size=32,
        method="pose",
        umap=False,
    )  # the UMAP stage's events are test_umap_view's (numba compiles umap once per process)
    with ParticleStack.open(easy_set["particles"]) as stack:
        classify(stack, config, tmp_path, events.append)
    # Preprocessing and the initial labels report their progress first, each up to every particle.
    before = events[: next(i for i, e in enumerate(events) if isinstance(e, RoundStarted))]
    assert {e.stage for e in before} == {"preprocess", "initial labels"}
    for stage in ("preprocess", "initial labels"):
        assert [e.done for e in before if e.stage == stage][-1] == 300
    kinds = [type(e) for e in events if not isinstance(e, StageProgress)]
    assert kinds[0] is RoundStarted and kinds[-1] is RoundDone
    assert kinds.count(EpochDone) == 2
    points = [e for e in events if isinstance(e, LossPoint)]
    assert len(points) >= 10
    assert [p.pairs_done for p in points] == sorted(p.pairs_done for p in points)
    assert sum(events[-1].counts) == 300


def test_missing_input_is_one_line_and_nonzero(tmp_path, capsys):
    code = main(["classify", str(tmp_path / "nope.mrcs"), "-o", str(tmp_path / "out"), "-g", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and "nope.mrcs" in err[0]


def test_more_classes_than_particles_is_refused(easy_set, tmp_path, capsys):
    code = main(["classify", str(easy_set["particles"]), "-o", str(tmp_path / "o"), "-c", "301", "-g", "cpu"])
    assert code != 0
    assert "cluster_num 301" in capsys.readouterr().err


def test_defaults_are_the_original_programs():
    from worker.engine.commands.classify import config_from_args

    config = config_from_args(parse_args(["classify", "x.mrcs", "-o", "out"]))
    assert (
        config.cluster_num,
        config.device,
        config.learning_rate,
        config.epoch_num,
        config.batch_size,
        config.round_num,
    ) == (4, "cuda:0", 5e-4, 20, 128, 5)
    assert (config.seed, config.size, config.method) == (0, 64, "pose")  # the method that passes every bar


def test_a_callback_can_cancel_between_batches_leaving_complete_rounds_only(easy_set, tmp_path):
    from worker.engine.errors import JobCancelled

    seen = []

    def cancel_in_round_two(event):
        seen.append(event)
        if isinstance(event, LossPoint) and event.round == 2:
            raise JobCancelled()

    config = ClassifyConfig(
        cluster_num=4, epoch_num=2, round_num=3, size=32, device="cpu", batch_size=64, umap=False
    )
    with ParticleStack.open(easy_set["particles"]) as stack, pytest.raises(JobCancelled):
        classify(stack, config, tmp_path, cancel_in_round_two)
    assert (tmp_path / "round_01" / "labels.csv").is_file()
    assert not (tmp_path / "round_02").exists()
    assert not (tmp_path / "summary.json").exists()
    # the cancel came on the first loss point of round 2, before any further training
    assert sum(1 for e in seen if isinstance(e, LossPoint) and e.round == 2) == 1
