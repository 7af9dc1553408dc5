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
    averages = method.average_at(full, 1.5)
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
    config = ClassifyConfig(method="pose-em", cluster_num=2, epoch_num=1, round_num=1, size=32, device="cpu")
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
