"""The simulator: exact ground truth, the options that matter, and the files it writes."""

from __future__ import annotations

import csv

import mrcfile
import numpy as np
import pytest

from cryoclust.cli import parse_args
from worker.engine.commands import simulate as simulate_command
from worker.engine.ctf import CtfParams
from worker.engine.molecules import make_model, render, view_rotations
from worker.engine.simulate import read_truth, simulate


def centred_correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_seeded_runs_repeat_and_seeds_differ():
    a = simulate(50, 3, 32, snr=0.5, rotate=True, shift=2, ctf=True, seed=7)
    b = simulate(50, 3, 32, snr=0.5, rotate=True, shift=2, ctf=True, seed=7)
    c = simulate(50, 3, 32, snr=0.5, rotate=True, shift=2, ctf=True, seed=8)
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.views, b.views)
    assert not np.array_equal(a.images, c.images)


def test_shapes_balance_and_distinct_views():
    sim = simulate(103, 4, 48, snr=1.0, seed=0)
    assert sim.images.shape == (103, 48, 48) and sim.images.dtype == np.float32
    assert sim.clean_views.shape == (4, 48, 48)
    counts = np.bincount(sim.views, minlength=4)
    assert counts.min() >= 25 and counts.sum() == 103
    assert sim.ctf is None and np.all(sim.angles == 0) and np.all(sim.shifts == 0)
    # Views are different projections, not copies of one another.
    for i in range(4):
        for j in range(i + 1, 4):
            assert centred_correlation(sim.clean_views[i], sim.clean_views[j]) < 0.9


def test_snr_is_the_variance_ratio():
    sim = simulate(400, 2, 32, snr=0.25, seed=1)
    clean = sim.clean_views[sim.views]
    noise = sim.images - clean
    ratio = clean.var(axis=(1, 2)).mean() / noise.var()
    assert ratio == pytest.approx(0.25, rel=0.05)


def test_rotation_and_shift_follow_the_recorded_truth():
    sim = simulate(20, 2, 64, snr=1e6, rotate=True, shift=4, seed=3)
    assert sim.angles.min() >= 0 and sim.angles.max() < 360 and sim.angles.std() > 30
    assert np.abs(sim.shifts).max() <= 4 and np.abs(sim.shifts).max() > 1
    # The same seed rebuilds the model and the view directions.
    rng = np.random.default_rng(3)
    model = make_model(64, rng)
    rotations = view_rotations(2, rng)
    base = render(model, rotations[:1], np.zeros(1), np.zeros((1, 2)), 64)[0]
    assert np.allclose(base, sim.clean_views[0], atol=1e-6)
    # +90 degrees maps (x, y) to (-y, x) with y the row index: quarter[y, x] = base[-x, y],
    # np.rot90(base, -1) up to one column because the centre is pixel box//2.
    quarter = render(model, rotations[:1], np.array([90.0]), np.zeros((1, 2)), 64)[0]
    assert np.allclose(quarter[:, 1:], np.rot90(base, -1)[:, :-1], atol=1e-5)
    # A shift (3, -2) moves x by +3 columns and y by -2 rows.
    moved = render(model, rotations[:1], np.zeros(1), np.array([[3.0, -2.0]]), 64)[0]
    assert np.allclose(moved, np.roll(base, (-2, 3), axis=(0, 1)), atol=1e-4)
    # With negligible noise each particle is its view, rotated and moved as recorded.
    for i in range(3):
        v = sim.views[i]
        expected = render(model, rotations[v : v + 1], sim.angles[i : i + 1], sim.shifts[i : i + 1], 64)[0]
        assert centred_correlation(sim.images[i], expected) > 0.999


def test_ctf_option_records_defocus_in_range():
    sim = simulate(60, 2, 32, snr=1.0, ctf=True, defocus_range=(12000, 20000), seed=2)
    assert isinstance(sim.ctf, CtfParams)
    assert sim.ctf.defocus_u.min() >= 12000 and sim.ctf.defocus_u.max() <= 20000
    assert np.all(sim.ctf.defocus_v <= sim.ctf.defocus_u)
    assert np.all(sim.ctf.voltage == 300) and np.all(sim.ctf.spherical_aberration == 2.7)
    assert np.all(sim.ctf.amplitude_contrast == 0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0, k=1), r"need 1 <= k <= n, got n=0"),
        (dict(n=5, k=6), r"need 1 <= k <= n, got n=5, k=6"),
        (dict(box=15), r"box must be even .* got 15"),
        (dict(snr=0), r"snr must be positive"),
        (dict(shift=100), r"shift must be between 0 and box/4"),
        (dict(ctf=True, defocus_range=(0, 100)), r"defocus must be positive"),
    ],
    ids=["no-particles", "more-views-than-particles", "odd-box", "zero-snr", "huge-shift", "zero-defocus"],
)
def test_bad_parameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate(**{"n": 10, "k": 2, "box": 32, **kwargs})


def test_ten_thousand_particles_come_out_whole_and_in_every_view():
    # Its speed is a benchmark figure (README), not a timed test.
    sim = simulate(10000, 4, 64, snr=0.1, rotate=True, shift=3, ctf=True, seed=0)
    assert sim.images.shape == (10000, 64, 64) and sim.images.dtype == np.float32
    assert np.isfinite(sim.images).all()
    assert np.bincount(sim.views, minlength=4).tolist() == [2500] * 4


def test_command_writes_stack_star_truth_and_views(tmp_path, capsys):
    out = tmp_path / "sim"
    args = parse_args(
        [
            "simulate",
            "-n",
            "40",
            "-k",
            "3",
            "--box",
            "32",
            "--snr",
            "0.5",
            "--rotate",
            "--shift",
            "2",
            "--ctf",
            "--defocus",
            "10000",
            "20000",
            "--seed",
            "4",
            "-o",
            str(out),
        ]
    )
    assert simulate_command.main(args) == 0
    assert "wrote 40 particles" in capsys.readouterr().out
    for name in ("particles.mrcs", "views.mrcs"):
        assert mrcfile.validate(str(out / name))
    with mrcfile.open(out / "particles.mrcs", permissive=False) as mrc:
        assert mrc.data.shape == (40, 32, 32)
        assert float(mrc.voxel_size.x) == pytest.approx(2.0)
    with mrcfile.open(out / "views.mrcs") as mrc:
        assert mrc.data.shape == (3, 32, 32)
    with open(out / "truth.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "index",
        "image_name",
        "view",
        "angle",
        "shift_x",
        "shift_y",
        "defocus_u",
        "defocus_v",
    ]
    assert len(rows) == 40 and rows[0]["image_name"] == "000001@particles.mrcs"
    views = read_truth(out / "truth.csv")
    assert views.min() == 0 and views.max() == 2
    assert 10000 <= float(rows[5]["defocus_u"]) <= 20000
    expected = simulate(
        40, 3, 32, snr=0.5, rotate=True, shift=2, ctf=True, defocus_range=(10000, 20000), seed=4
    )
    assert np.array_equal(views, expected.views)


def test_star_reads_back_with_its_ctf(tmp_path):
    from worker.engine.io.particles import ParticleStack
    from worker.engine.simulate import write_simulation

    sim = simulate(30, 2, 32, snr=1.0, ctf=True, seed=5)
    paths = write_simulation(sim, tmp_path)
    with ParticleStack.open(paths["star"]) as stack:
        assert stack.n == 30 and stack.box == 32
        assert stack.pixel_size == pytest.approx(2.0)
        assert np.allclose(stack.read(), sim.images)
        assert stack.ctf is not None
        assert np.allclose(stack.ctf.defocus_u, sim.ctf.defocus_u, atol=0.01)
        assert np.allclose(stack.ctf.defocus_angle, sim.ctf.defocus_angle, atol=0.01)
        assert np.allclose(stack.ctf.voltage, 300)


def test_streamed_stack_is_the_in_memory_stack_chunk_by_chunk(tmp_path, monkeypatch):
    import tracemalloc

    from worker.engine import simulate as simulate_module
    from worker.engine.simulate import simulate_to_folder, write_simulation

    # Batches of 32 images at 32 px, so the 2000 particles take 63 batches (the last one short).
    monkeypatch.setattr(simulate_module, "CHUNK_BYTES", 32 * 4 * 32 * 32)
    params = dict(
        n=2000, k=3, box=32, snr=0.3, rotate=True, shift=2, ctf=True, junk=0.1, noise="pink", seed=5
    )
    in_memory = simulate(**params)
    write_simulation(in_memory, tmp_path / "in_memory")  # the reference files; imports done before tracing
    tracemalloc.start()
    try:
        truth, paths = simulate_to_folder(tmp_path / "streamed", **params)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stack_bytes = in_memory.images.nbytes  # 8 MB
    assert peak < stack_bytes / 4, f"streaming held {peak:,} bytes for a {stack_bytes:,}-byte stack"
    assert truth.images is None
    with mrcfile.open(paths["particles"], permissive=False) as mrc:
        header = mrc.header
        assert (int(header.nx), int(header.ny), int(header.nz)) == (32, 32, 2000)
        assert int(header.mode) == 2 and int(header.ispg) == 0 and int(header.mz) == 1
        assert float(mrc.voxel_size.x) == pytest.approx(2.0) and float(mrc.voxel_size.z) == pytest.approx(2.0)
        assert np.array_equal(mrc.data, in_memory.images)
        assert float(header.dmin) == in_memory.images.min() and float(header.dmax) == in_memory.images.max()
        assert float(header.dmean) == pytest.approx(in_memory.images.mean(dtype=np.float64), rel=1e-5)
        assert float(header.rms) == pytest.approx(in_memory.images.std(dtype=np.float64), rel=1e-5)
    assert mrcfile.validate(str(paths["particles"]))

    # Every other file says what the in-memory path's says (the star and MRC headers carry a time).
    def content(path):
        return [line for line in path.read_bytes().splitlines() if not line.startswith(b"# Created")]

    for name in ("star", "truth"):
        assert content(paths[name]) == content(tmp_path / "in_memory" / paths[name].name), name
    with (
        mrcfile.open(paths["views"]) as streamed,
        mrcfile.open(tmp_path / "in_memory" / "views.mrcs") as kept,
    ):
        assert np.array_equal(streamed.data, kept.data)
    assert not [p.name for p in (tmp_path / "streamed").iterdir() if p.name.startswith(".")]


def test_a_failed_stream_leaves_no_stack(tmp_path):
    from worker.engine.io.mrc import new_stack_file

    target = tmp_path / "particles.mrcs"
    with pytest.raises(ValueError, match="every image of a stack file must be written"):
        with new_stack_file(target, 10, 16, 1.0) as stack:
            stack[0:4] = np.zeros((4, 16, 16), dtype=np.float32)
    assert list(tmp_path.iterdir()) == []
