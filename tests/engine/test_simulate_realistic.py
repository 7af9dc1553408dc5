"""The simulator's realistic options: a second molecule, close view pairs, view jitter, junk boxes
and pink noise."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cryoclust.cli import parse_args
from worker.engine.commands import simulate as simulate_command
from worker.engine.molecules import projection_directions, tilt_frames, view_rotations
from worker.engine.quality import ring_index
from worker.engine.simulate import read_truth, simulate, write_simulation
from worker.engine.simulate_junk import JUNK_KINDS


def centred_correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def direction_angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(abs(a @ b), 0.0, 1.0))))


def spectrum_slope(noise: np.ndarray) -> float:
    """Slope of log radial power against log frequency, rings 2..box/2-1."""
    box = noise.shape[-1]
    power = (np.abs(np.fft.rfft2(noise)) ** 2).mean(axis=0)
    rings = ring_index(box)
    radial = np.bincount(rings.ravel(), power.ravel()) / np.bincount(rings.ravel())
    f = np.arange(2, box // 2)
    return float(np.polyfit(np.log(f), np.log(radial[2 : box // 2]), 1)[0])


def test_new_options_are_reproducible_for_a_seed():
    kwargs = dict(
        rotate=True, shift=3, ctf=True, molecule="ring", close_pairs=2, view_jitter=5, junk=0.2, noise="pink"
    )
    a = simulate(120, 6, 32, snr=0.1, seed=11, **kwargs)
    b = simulate(120, 6, 32, snr=0.1, seed=11, **kwargs)
    c = simulate(120, 6, 32, snr=0.1, seed=12, **kwargs)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.views, b.views)
    assert np.array_equal(a.junk_kinds, b.junk_kinds) and a.view_pairs == b.view_pairs
    assert not np.array_equal(a.images, c.images)


def test_defaults_leave_existing_stacks_untouched():
    # The new options draw from a second random stream: off, a seed gives the same stack.
    plain = simulate(80, 3, 32, snr=0.5, rotate=True, shift=2, ctf=True, seed=4)
    explicit = simulate(
        80,
        3,
        32,
        snr=0.5,
        rotate=True,
        shift=2,
        ctf=True,
        seed=4,
        molecule="blobs",
        close_pairs=0,
        view_jitter=0.0,
        junk=0.0,
        noise="white",
    )
    assert np.array_equal(plain.images, explicit.images)
    # Jitter changes the particles but not the views, their order or the poses.
    jittered = simulate(80, 3, 32, snr=0.5, rotate=True, shift=2, ctf=True, seed=4, view_jitter=5)
    assert np.array_equal(plain.views, jittered.views) and np.array_equal(plain.angles, jittered.angles)
    assert np.array_equal(plain.clean_views, jittered.clean_views)
    assert not np.array_equal(plain.images, jittered.images)


def test_the_ring_molecule_differs_from_the_blobs():
    blobs = simulate(40, 6, 64, snr=1.0, seed=3, molecule="blobs")
    ring = simulate(40, 6, 64, snr=1.0, seed=3, molecule="ring")
    assert ring.molecule == "ring"
    for v in range(6):
        assert centred_correlation(blobs.clean_views[v], ring.clean_views[v]) < 0.8

    # A ring seen from the top has a hole: the view nearest the ring axis is dimmer at the centre
    # than around it, unlike any blob cluster view of this seed.
    def hole_depth(view: np.ndarray) -> float:
        centre = view[30:35, 30:35].mean()
        coords = np.arange(64) - 32
        r = np.hypot(coords[:, None], coords[None, :])
        return float(view[(r > 6) & (r < 12)].mean() - centre)

    assert max(hole_depth(v) for v in ring.clean_views) > max(hole_depth(v) for v in blobs.clean_views)


def test_close_pairs_are_less_than_15_degrees_apart():
    sim = simulate(200, 10, 32, snr=1.0, seed=5, close_pairs=3)
    directions = projection_directions(sim.view_frames)
    assert len(sim.view_pairs) == 3
    paired = set()
    for view, partner in sim.view_pairs:
        assert 7.9 <= direction_angle(directions[view], directions[partner]) <= 12.1
        paired |= {view, partner}
    assert len(paired) == 6  # each pair has its own two views
    # Every other pair of views is well apart.
    for i in range(10):
        for j in range(i + 1, 10):
            if (i, j) not in sim.view_pairs:
                assert direction_angle(directions[i], directions[j]) > 15


def test_tilting_a_frame_moves_its_direction_by_the_tilt():
    frames = view_rotations(50, np.random.default_rng(0))
    tilts = np.linspace(-5, 5, 50)
    turned = tilt_frames(frames, tilts, np.linspace(0, 6, 50))
    for before, after, tilt in zip(projection_directions(frames), projection_directions(turned), tilts):
        assert direction_angle(before, after) == pytest.approx(abs(tilt), abs=1e-6)
    gram = np.einsum("nij,nkj->nik", turned, turned)
    assert np.allclose(gram, np.eye(2), atol=1e-9)  # still an orthonormal frame


def test_view_jitter_moves_particles_away_from_their_exact_view():
    exact = simulate(60, 2, 64, snr=1e8, seed=2)
    jittered = simulate(60, 2, 64, snr=1e8, seed=2, view_jitter=5)
    correlations = [centred_correlation(jittered.images[i], exact.images[i]) for i in range(60)]
    assert min(correlations) > 0.9  # still the same view (5 degrees change little) ...
    assert np.median(correlations) < 0.999 and min(correlations) < 0.99  # ... but not exactly


def test_junk_fraction_kinds_and_class_zero_in_truth(tmp_path):
    sim = simulate(300, 4, 32, snr=1e6, seed=6, junk=0.3)
    assert sim.is_junk.sum() == 90 and np.all(sim.views[sim.is_junk] == -1)
    assert np.bincount(sim.views[~sim.is_junk]).tolist() == [53, 53, 52, 52]
    kinds = sim.junk_kinds[sim.is_junk]
    assert set(kinds.tolist()) == set(range(len(JUNK_KINDS))) and np.all(sim.junk_kinds[~sim.is_junk] == -1)
    # Empty ice holds (nearly) nothing; contamination is far denser than any particle.
    particle_std = sim.images[~sim.is_junk].std(axis=(1, 2)).mean()
    ice = sim.images[sim.junk_kinds == JUNK_KINDS.index("ice")]
    dirt = sim.images[sim.junk_kinds == JUNK_KINDS.index("contamination")]
    assert ice.std(axis=(1, 2)).max() < 0.01 * particle_std
    assert dirt.max(axis=(1, 2)).min() > 1.4 * sim.images[~sim.is_junk].max(axis=(1, 2)).mean()
    # A cut particle's mass lies near the box edge.
    cut = sim.images[sim.junk_kinds == JUNK_KINDS.index("cut")]
    coords = np.arange(32) - 16
    radius = np.hypot(coords[:, None], coords[None, :])
    centre_of_mass = (cut * radius).sum(axis=(1, 2)) / cut.sum(axis=(1, 2))
    assert centre_of_mass.mean() > 10
    paths = write_simulation(sim, tmp_path)
    with open(paths["truth"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(row["view"] == "0" for row in rows) == 90
    assert {row["junk"] for row in rows if row["view"] == "0"} <= set(JUNK_KINDS)
    assert all(row["junk"] == "" for row in rows if row["view"] != "0")
    assert np.array_equal(read_truth(paths["truth"]), sim.views)


def test_snr_is_measured_on_particles_with_junk_and_pink_noise():
    clean = simulate(400, 2, 32, snr=1e12, seed=1, junk=0.2, noise="pink")
    noisy = simulate(400, 2, 32, snr=0.2, seed=1, junk=0.2, noise="pink")
    particles = ~noisy.is_junk
    noise = noisy.images - clean.images
    ratio = clean.images[particles].var(axis=(1, 2)).mean() / noise.var()
    assert ratio == pytest.approx(0.2, rel=0.05)


def test_pink_noise_falls_as_one_over_f_and_white_noise_is_flat():
    slopes = {}
    for noise in ("white", "pink"):
        clean = simulate(300, 2, 32, snr=1e12, seed=1, noise=noise)
        noisy = simulate(300, 2, 32, snr=0.01, seed=1, noise=noise)
        slopes[noise] = spectrum_slope(noisy.images - clean.images)
    assert abs(slopes["white"]) < 0.15
    assert -1.2 < slopes["pink"] < -0.8


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(close_pairs=2, k=3), "close pairs must be between 0 and k/2 = 1, got 2"),
        (dict(junk=0.95), "junk must be a fraction between 0 and"),
        (dict(junk=-0.1), "junk must be a fraction between 0 and .*, got -0.1"),
        (dict(noise="blue"), "unknown noise 'blue'"),
        (dict(molecule="virus"), "unknown molecule 'virus'"),
        (dict(view_jitter=45), "view jitter must be between 0 and .* degrees, got 45"),
        (dict(n=10, k=4, junk=0.7), "10 boxes with junk 0.7 leave fewer particles than the 4 views"),
    ],
    ids=[
        "too-many-pairs",
        "all-junk",
        "negative-junk",
        "unknown-noise",
        "unknown-molecule",
        "huge-jitter",
        "junk-leaves-too-few",
    ],
)
def test_bad_new_parameters_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        simulate(**{"n": 40, "k": 4, "box": 32, **kwargs})


def test_command_takes_the_new_flags(tmp_path, capsys):
    out = tmp_path / "sim"
    args = parse_args(
        [
            "simulate",
            "-n",
            "60",
            "-k",
            "4",
            "--box",
            "32",
            "--molecule",
            "ring",
            "--close-pairs",
            "1",
            "--view-jitter",
            "5",
            "--junk",
            "0.25",
            "--noise",
            "pink",
            "--seed",
            "3",
            "-o",
            str(out),
        ]
    )
    assert simulate_command.main(args) == 0
    assert "15 junk boxes" in capsys.readouterr().out
    expected = simulate(
        60, 4, 32, seed=3, molecule="ring", close_pairs=1, view_jitter=5, junk=0.25, noise="pink"
    )
    assert np.array_equal(read_truth(out / "truth.csv"), expected.views)
