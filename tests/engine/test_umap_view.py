"""The UMAP view of the embedding: fitted on a seeded sample, the rest placed with `transform`,
both from exact neighbours (pynndescent's index is never built); it keeps well-separated classes
apart, covers every particle, repeats for a seed, and only the last round of a run (with umap
on) gets one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from worker.engine.cluster import (
    UMAP_MIN_PARTICLES,
    ExactSearch,
    _sample_rows,
    exact_neighbours,
    umap_2d,
)
from worker.engine.config import ClassifyConfig
from worker.engine.events import StageProgress
from worker.engine.io.particles import ParticleStack
from worker.engine.outputs import UMAP_FILE
from worker.engine.pipeline import classify
from worker.engine.simulate import simulate, write_simulation

pytestmark = pytest.mark.slow  # numba compiles umap on its first call in a process (tens of seconds)


@pytest.fixture(scope="module")
def blobs():
    """3,000 points in three Gaussian blobs of 20-d, 10 standard deviations apart, and their truth."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 10 / np.sqrt(2), size=(3, 20))
    truth = rng.integers(0, 3, size=3000)
    return (centres[truth] + rng.normal(size=(3000, 20))).astype(np.float32), truth


@pytest.fixture(scope="module")
def layout(blobs):
    progress = []
    xy = umap_2d(blobs[0], 7, sample=1000, chunk=700, on_progress=lambda done, total: progress.append(done))
    return xy, progress


def test_the_layout_keeps_well_separated_classes_apart(blobs, layout):
    _, truth = blobs
    xy, _ = layout
    found = KMeans(3, n_init=10, random_state=0).fit_predict(xy)
    assert adjusted_rand_score(truth, found) > 0.9


def test_the_fitted_sample_and_the_transformed_rest_cover_every_point(blobs, layout):
    embedding, truth = blobs
    xy, progress = layout
    assert xy.shape == (3000, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert progress == [1000, 1700, 2400, 3000]  # the fit, then three transform chunks
    # The points placed by transform land among the fitted points of their own blob.
    fitted = _sample_rows(3000, 1000, torch.Generator().manual_seed(7)).numpy()
    rest = np.setdiff1d(np.arange(3000), fitted)
    nearest = KNeighborsClassifier(1).fit(xy[fitted], truth[fitted]).predict(xy[rest])
    assert (nearest == truth[rest]).mean() > 0.95


def test_the_same_seed_gives_the_same_layout(blobs, layout):
    embedding, _ = blobs
    xy, _ = layout
    assert np.array_equal(umap_2d(embedding, 7, sample=1000, chunk=700), xy)


def test_a_stack_no_larger_than_the_sample_is_laid_out_from_exact_neighbours(blobs):
    embedding, truth = blobs[0][:1500], blobs[1][:1500]
    indices, distances = exact_neighbours(embedding, 15)
    expected = NearestNeighbors(n_neighbors=15).fit(embedding).kneighbors(embedding)
    assert np.array_equal(indices[:, 0], np.arange(1500)) and np.all(distances[:, 0] == 0)
    np.testing.assert_allclose(distances, expected[0], rtol=1e-4, atol=1e-4)
    assert (indices == expected[1]).mean() > 0.999  # ties aside
    xy = umap_2d(embedding, 3)  # 1,500 <= the sample: fitted on all, nothing transformed
    found = KMeans(3, n_init=10, random_state=0).fit_predict(xy)
    assert adjusted_rand_score(truth, found) > 0.9 and np.array_equal(umap_2d(embedding, 3), xy)


def test_neither_path_builds_pynndescents_index(blobs, monkeypatch):
    # Its nearest-neighbour descent is what numba took minutes to compile in a new process.
    import pynndescent

    def refuse(*args, **kwargs):
        raise AssertionError("pynndescent's index was built")

    monkeypatch.setattr(pynndescent.NNDescent, "__init__", refuse)
    embedding, _ = blobs
    assert np.isfinite(umap_2d(embedding[:1200], 4, sample=1000, chunk=700)).all()  # fit, transform
    assert np.isfinite(umap_2d(embedding[:600], 4, sample=1000)).all()  # fit alone


def test_the_transform_search_finds_the_exact_neighbours_among_the_fitted_points(blobs):
    embedding, _ = blobs
    fitted, queries = embedding[:2000], embedding[2000:2600]
    indices, distances = ExactSearch(fitted).query(queries, 15, epsilon=0.12)
    expected = NearestNeighbors(n_neighbors=15).fit(fitted).kneighbors(queries)
    np.testing.assert_allclose(distances, expected[0], rtol=1e-4, atol=1e-4)
    assert (indices == expected[1]).mean() > 0.999  # ties aside


def test_too_few_particles_get_no_layout():
    assert umap_2d(np.zeros((UMAP_MIN_PARTICLES - 1, 20), np.float32), 0) is None


@pytest.fixture(scope="module")
def easy_set(tmp_path_factory):
    return write_simulation(simulate(n=200, k=3, box=32, snr=1.0, seed=8), tmp_path_factory.mktemp("easy"))


@pytest.mark.parametrize("umap", [True, False], ids=["umap-on", "umap-off"])
def test_only_the_last_round_gets_a_umap_view_timed_as_a_stage(easy_set, tmp_path, umap):
    config = ClassifyConfig(method="pose-em", cluster_num=3, round_num=2, size=32, device="cpu", umap=umap)
    events = []
    with ParticleStack.open(easy_set["star"]) as stack:
        classify(stack, config, tmp_path, events.append)
    first, last = tmp_path / "round_01", tmp_path / "round_02"
    assert not (first / UMAP_FILE).exists()
    assert (last / UMAP_FILE).exists() is umap
    timings = [json.loads((folder / "round.json").read_text())["timings"] for folder in (first, last)]
    assert "umap" not in timings[0] and ("umap" in timings[1]) is umap
    stages = [e for e in events if isinstance(e, StageProgress) and e.stage == "umap"]
    assert bool(stages) is umap
    if umap:
        xy = np.load(last / UMAP_FILE)
        assert xy.shape == (200, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
        assert timings[1]["umap"] > 0
        assert {(e.round, e.stage) for e in stages} == {(2, "umap")} and stages[-1].done == 200


def test_a_run_of_zero_rounds_lays_out_round_zero(easy_set, tmp_path):
    config = ClassifyConfig(method="invariant", cluster_num=3, round_num=0, size=32, device="cpu")
    with ParticleStack.open(easy_set["star"]) as stack:
        classify(stack, config, tmp_path)
    assert np.load(tmp_path / "round_00" / UMAP_FILE).shape == (200, 2)
    assert "umap" in json.loads((tmp_path / "round_00" / "round.json").read_text())["timings"]


def test_importing_the_pipeline_does_not_import_umap():
    # umap is imported inside umap_2d only: rounds before the last never load it
    code = "import sys, worker.engine.pipeline; print('umap' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


LAYOUT_IN_A_NEW_PROCESS = """
import json, numpy as np
from worker.engine.cluster import umap_2d
import umap.layouts
points = np.random.default_rng(5).normal(size=(300, 20)).astype(np.float32)
xy = umap_2d(points, 2)
epoch = umap.layouts._nb_optimize_layout_euclidean_single_epoch.stats
print(json.dumps({"hits": sum(epoch.cache_hits.values()), "path": epoch.cache_path, "xy": xy.tolist()}))
"""


def test_a_later_process_loads_umaps_compiled_functions_from_numbas_cache():
    # The first process compiles umap's functions and saves them (or loads an earlier
    # process's); the second must load them instead of compiling them again.
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", LAYOUT_IN_A_NEW_PROCESS], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    assert runs[1]["hits"] == 1 and runs[1]["path"]  # the layout's epochs came from the disk
    assert runs[0]["xy"] == runs[1]["xy"]  # and lay the points out as the compiled ones do
