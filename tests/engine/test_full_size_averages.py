"""Class averages at the input's full box and pixel size, from the poses found at the model size."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import torch

from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.likelihood import Posterior, transform_sharp
from worker.engine.pipeline import FULL_SIZE_FILE, classify
from worker.engine.pose import PoseMethod
from worker.engine.preprocess import fourier_crop, normalise
from worker.engine.simulate import simulate, write_simulation

SEARCH = 32  # the pose method's search size (shifts in its pixels)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_with_known_poses_the_full_size_averages_match_a_direct_average():
    box, k = 64, 2
    sim = simulate(n=160, k=k, box=box, snr=0.5, rotate=True, shift=3.0, pixel_size=1.5, seed=5)
    full = normalise(torch.from_numpy(sim.images))[:, None]
    method = PoseMethod()
    method.set_optics(None, 1.5 * box / SEARCH, False)
    method._prepare(fourier_crop(full[:, 0], SEARCH)[:, None])
    # The simulator's angle and shift bring each particle back to its view (align.transform's
    # convention); the posterior keeps shifts in search-size pixels.
    n = len(sim.views)
    angles = torch.from_numpy(sim.angles).float()
    shifts = torch.from_numpy(sim.shifts).float()
    classes = torch.from_numpy(sim.views).long()
    posterior = Posterior(
        classes[:, None],
        angles[:, None],
        shifts[:, None, :] * SEARCH / box,
        torch.ones((n, 1)),
        torch.nn.functional.one_hot(classes, k).float(),
        torch.zeros(n),
    )
    method.final_poses = (posterior, torch.ones(SEARCH // 2 + 1), k)
    averages = method.average_at(full, sim.views, k, 1.5)
    assert averages.shape == (k, box, box) and averages.dtype == np.float32

    aligned = transform_sharp(full[:, 0], angles, shifts).numpy()
    for c in range(k):
        direct = aligned[sim.views == c].mean(0)
        # tolerance: the regularised (Wiener-like) average damps the noisiest rings the plain mean
        # keeps; they agree to a correlation of 0.98 (0.989 measured)
        assert _correlation(averages[c], direct) > 0.98, c
        assert _correlation(averages[c], sim.clean_views[c]) > 0.9, c


def test_a_run_writes_full_size_averages_with_the_input_pixel_size(tmp_path):
    sim = simulate(n=200, k=2, box=64, snr=0.5, rotate=True, shift=2.0, ctf=True, pixel_size=1.7, seed=8)
    paths = write_simulation(sim, tmp_path / "data")
    config = ClassifyConfig(
        method="pose-em", cluster_num=2, epoch_num=1, round_num=1, size=32, device="cpu", umap=False
    )
    with ParticleStack.open(paths["star"]) as stack:
        classify(stack, config, tmp_path / "run")
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["full_size_averages"] == {"file": FULL_SIZE_FILE, "box": 64, "pixel_size": 1.7}
    for path in (tmp_path / "run" / FULL_SIZE_FILE, tmp_path / "run/round_01" / FULL_SIZE_FILE):
        with mrcfile.open(path) as mrc:
            full = mrc.data.copy()
            assert full.shape == (2, 64, 64)
            assert np.isclose(float(mrc.voxel_size.x), 1.7, atol=1e-3)
    # the model-size averages stay, at the model size and its pixel size
    with mrcfile.open(tmp_path / "run/class_averages.mrcs") as mrc:
        small = mrc.data.copy()
        assert small.shape == (2, 32, 32) and np.isclose(float(mrc.voxel_size.x), 3.4, atol=1e-3)
    # the same poses at both sizes: the full-size averages cropped to 32 px match the small ones
    cropped = fourier_crop(torch.from_numpy(full), 32).numpy()
    for c in range(2):
        assert _correlation(cropped[c], small[c]) > 0.95, c


def test_with_known_alignments_the_aligned_averager_matches_a_direct_average_at_full_size():
    """The invariant method's averages (AlignedAverager): alignments found at S, applied at the box."""
    from worker.engine.align import AlignedAverager, AlignParams

    box, small, k = 64, 32, 2
    sim = simulate(n=120, k=k, box=box, snr=0.5, rotate=True, shift=3.0, pixel_size=1.5, seed=6)
    full = normalise(torch.from_numpy(sim.images))[:, None]
    averager = AlignedAverager()
    # as `average` at the model size would leave them: shifts in model-size pixels
    averager.params = AlignParams(sim.angles, sim.shifts * small / box, np.zeros(sim.n))
    averager.size = small
    averages = averager.average_at(full, sim.views, k, 1.5)
    assert averages.shape == (k, box, box) and averages.dtype == np.float32

    aligned = transform_sharp(
        full[:, 0], torch.from_numpy(sim.angles).float(), torch.from_numpy(sim.shifts).float()
    ).numpy()
    for c in range(k):
        direct = aligned[sim.views == c].mean(0)
        # tolerance: the same moves summed in batches in float64; only float32 rounding differs
        np.testing.assert_allclose(averages[c], direct, atol=1e-5)
        assert _correlation(averages[c], sim.clean_views[c]) > 0.9, c


def _run(tmp_path, method: str, box: int = 64, size: int = 32, rounds: int = 2):
    sim = simulate(n=160, k=2, box=box, snr=0.5, rotate=True, shift=2.0, ctf=True, pixel_size=1.7, seed=8)
    paths = write_simulation(sim, tmp_path / "data")
    config = ClassifyConfig(
        method=method, cluster_num=2, epoch_num=1, round_num=rounds, size=size, device="cpu", umap=False
    )
    notices: list[str] = []
    with ParticleStack.open(paths["star"]) as stack:
        classify(stack, config, tmp_path / "run", on_notice=notices.append)
    return tmp_path / "run", notices


def _read(path):
    with mrcfile.open(path) as mrc:
        return mrc.data.copy(), float(mrc.voxel_size.x)


def test_the_reference_method_gets_full_size_class_means_of_its_last_round(tmp_path):
    run, _ = _run(tmp_path, "reference")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["full_size_averages"] == {"file": FULL_SIZE_FILE, "box": 64, "pixel_size": 1.7}
    full, voxel = _read(run / FULL_SIZE_FILE)
    assert full.shape == (2, 64, 64) and np.isclose(voxel, 1.7, atol=1e-3)
    assert not (run / "round_01" / FULL_SIZE_FILE).exists()  # only the last round: see the pipeline
    assert np.array_equal(_read(run / "round_02" / FULL_SIZE_FILE)[0], full)
    # The reference method's averages are plain class means (no phase flip for it): the same
    # particles read at full size and normalised, averaged by the last round's labels.
    labels = np.loadtxt(run / "round_02/labels.csv", delimiter=",", skiprows=1, usecols=2, dtype=int) - 1
    with ParticleStack.open(tmp_path / "data/particles.star") as stack:
        images = normalise(torch.from_numpy(stack.read(0, len(stack))).float()).numpy()
    for c in range(2):
        # tolerance: float64 sums of float32 images either way; float32 rounding only
        np.testing.assert_allclose(full[c], images[labels == c].mean(0), atol=1e-5)
    # the gallery of the last round is drawn from them, and OUT/ has its copy
    assert (run / "class_averages.png").read_bytes() == (run / "round_02/class_averages.png").read_bytes()
    assert (run / "class_averages.png").read_bytes() != (run / "round_01/class_averages.png").read_bytes()
    # stopped after its last round but before these: a resumed run makes the same ones
    for path in run.rglob(FULL_SIZE_FILE):
        path.unlink()
    _run(tmp_path, "reference")
    assert np.array_equal(_read(run / FULL_SIZE_FILE)[0], full)


def test_the_invariant_method_gets_aligned_full_size_averages(tmp_path):
    run, _ = _run(tmp_path, "invariant", rounds=1)
    full, voxel = _read(run / FULL_SIZE_FILE)
    small, small_voxel = _read(run / "class_averages.mrcs")
    assert full.shape == (2, 64, 64) and np.isclose(voxel, 1.7, atol=1e-3)
    assert small.shape == (2, 32, 32) and np.isclose(small_voxel, 3.4, atol=1e-3)
    # the same alignments at both sizes: the full-size averages cropped to 32 px match the small
    # ones (tolerance: the small ones were moved by bilinear interpolation on the coarser grid;
    # 0.995 measured)
    cropped = fourier_crop(torch.from_numpy(full), 32).numpy()
    for c in range(2):
        assert _correlation(cropped[c], small[c]) > 0.95, c


def test_at_a_box_no_larger_than_the_model_size_the_averages_are_the_full_size_ones(tmp_path):
    run, _ = _run(tmp_path, "reference", box=32, size=64)
    full, voxel = _read(run / FULL_SIZE_FILE)
    small, _ = _read(run / "class_averages.mrcs")
    assert np.array_equal(full, small) and np.isclose(voxel, 1.7, atol=1e-3)


def test_a_stack_too_large_for_the_memory_set_aside_goes_without_and_says_so(tmp_path, monkeypatch):
    from worker.engine import pipeline

    monkeypatch.setattr(pipeline, "FULL_SIZE_BYTES", 64 * 64 * 4 * 100)  # 100 particles of 64 px
    run, notices = _run(tmp_path, "reference")
    assert notices == ["no full-size class averages: 160 particles of 64 px exceed the memory set aside"]
    assert json.loads((run / "summary.json").read_text())["full_size_averages"] is None
    assert not list(run.rglob(FULL_SIZE_FILE))
