"""Synthetic particle stacks with known classes, for tests, benchmarks and demos.

A seeded 3-D model (worker.engine.molecules: "blobs", a random cluster of Gaussian blobs, or
"ring", a ring complex with an asymmetric arm) is projected along k directions: these are the k
true classes ("views"). The views are far apart, except that `close_pairs` of them get a partner
8-12 degrees away; `view_jitter` tilts each particle's direction by up to that many degrees.
Each particle is one view, optionally rotated in-plane by a uniform random angle and shifted,
optionally multiplied by a CTF with a random defocus, plus white or pink (1/f) Gaussian noise at a
chosen SNR (signal variance over noise variance, both measured over the whole box, the signal
over the particles only). A fraction `junk` of the boxes hold no proper particle (empty ice,
carbon edge, contamination, aggregate, particle cut by the box edge; worker.engine.simulate_junk).

A Gaussian blob stays a Gaussian under projection, rotation and shift, so every particle is drawn
exactly (no interpolation): per particle the blob centres are moved, and the image is the sum of
separable Gaussians, one batched matrix product per chunk of the stack. numpy only.
`simulate` returns the stack in memory; `simulate_to_folder` writes the same stack chunk by chunk
into particles.mrcs, so any number of particles fits in flat memory.

Conventions (what truth.csv records): `view` is 1-based, 0 for junk (in memory, `views` is
0-based and -1 for junk); `angle` is the in-plane rotation in degrees applied to the view,
counter-clockwise in (x, y) with y the row index; `shift_x/shift_y` are the pixels the rotated
view was moved by. So particle(p) = view(R(-angle) (p - shift)); the image centre is pixel
(box//2, box//2). With junk, a last column `junk` names the kind of each junk box.
"""

from __future__ import annotations

import csv
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from worker.engine.ctf import CtfParams, apply_ctf
from worker.engine.molecules import (
    MOLECULES,
    molecule_model,
    render,
    tilt_frames,
    views_with_close_pairs,
)
from worker.engine.simulate_junk import (
    JUNK_KINDS,
    NOISES,
    colour,
    junk_boxes,
    pink_gain,
)

VOLTAGE = 300.0  # kV
SPHERICAL_ABERRATION = 2.7  # mm
AMPLITUDE_CONTRAST = 0.1
MAX_ASTIGMATISM = 600.0  # Å between defocus U and V
# Images drawn per batch: 2048 at 32 px. Drawing holds about 7 times a batch in float64 work
# arrays (projections, CTF spectra), so a batch of 8 MiB keeps the working memory near 60 MiB.
CHUNK_BYTES = 8 * 2**20
MAX_VIEW_JITTER = 30.0  # degrees
MAX_JUNK = 0.9  # fraction of boxes


@dataclass(frozen=True)
class Simulation:
    """A simulated stack and its ground truth. `views` are 0-based class labels, -1 for junk."""

    images: np.ndarray | None  # float32 (N, box, box); None when streamed to a file
    views: np.ndarray  # int64 (N,) 0-based; -1 for a junk box
    angles: np.ndarray  # float64 (N,) degrees (0 for junk)
    shifts: np.ndarray  # float64 (N, 2) pixels, (x, y) (0 for junk)
    ctf: CtfParams | None
    clean_views: np.ndarray  # float32 (k, box, box): no rotation, shift, jitter, CTF or noise
    pixel_size: float
    snr: float
    molecule: str = "blobs"
    noise: str = "white"
    junk_kinds: np.ndarray | None = None  # int (N,): index into JUNK_KINDS, -1 for particles
    view_pairs: tuple[tuple[int, int], ...] = ()  # (view, partner) pairs < 15 degrees apart
    view_frames: np.ndarray | None = None  # (k, 2, 3): each view's image x and y axes in 3-D

    @property
    def n(self) -> int:
        return len(self.views)

    @property
    def k(self) -> int:
        return len(self.clean_views)

    @property
    def is_junk(self) -> np.ndarray:
        return self.views < 0


def _check(
    n, k, box, snr, shift, pixel_size, ctf, low, molecule, close_pairs, view_jitter, junk, noise
) -> None:
    if n < 1 or k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if box < 16 or box % 2:
        raise ValueError(f"box must be even and at least 16, got {box}")
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    if shift < 0 or shift > box / 4:
        raise ValueError(f"shift must be between 0 and box/4 = {box / 4}, got {shift}")
    if pixel_size <= 0:
        raise ValueError(f"pixel size must be positive, got {pixel_size}")
    if ctf and low <= 0:
        raise ValueError(f"defocus must be positive (underfocus, Å), got {low}")
    if molecule not in MOLECULES:
        raise ValueError(f"unknown molecule {molecule!r}; choose one of {', '.join(MOLECULES)}")
    if not 0 <= close_pairs <= k // 2:
        raise ValueError(f"close pairs must be between 0 and k/2 = {k // 2}, got {close_pairs}")
    if not 0 <= view_jitter <= MAX_VIEW_JITTER:
        raise ValueError(f"view jitter must be between 0 and {MAX_VIEW_JITTER} degrees, got {view_jitter}")
    if not 0 <= junk <= MAX_JUNK:
        raise ValueError(f"junk must be a fraction between 0 and {MAX_JUNK}, got {junk}")
    if n - int(round(junk * n)) < k:
        raise ValueError(f"{n} boxes with junk {junk} leave fewer particles than the {k} views")
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")


Progress = Callable[[str, int, int], None]  # (stage, particles done, particles in all)


class _Store(Protocol):
    """Where the images go: an in-memory array, or a stack file being written (io.mrc.StackFile)."""

    def __getitem__(self, rows: slice) -> np.ndarray: ...
    def __setitem__(self, rows: slice, images: np.ndarray) -> None: ...


@dataclass
class _Plan:
    """Everything drawn before the images, and the two streams the images still draw from."""

    truth: Simulation  # images left empty
    model: object
    rng: np.random.Generator
    extra: np.random.Generator
    tilts: np.ndarray | None
    azimuths: np.ndarray | None
    box: int


def _plan(
    n,
    k,
    box,
    snr,
    rotate,
    shift,
    ctf,
    defocus_range,
    pixel_size,
    seed,
    molecule,
    close_pairs,
    view_jitter,
    junk,
    noise,
) -> _Plan:
    low, high = sorted(float(d) for d in defocus_range)
    _check(n, k, box, snr, shift, pixel_size, ctf, low, molecule, close_pairs, view_jitter, junk, noise)

    rng = np.random.default_rng(seed)
    # Draws for the newer options come from a second stream, so that without them a seed
    # gives exactly the stack it always gave.
    extra = np.random.default_rng([seed, 1])
    model = molecule_model(molecule, box, rng)
    rotations, pairs = views_with_close_pairs(k, close_pairs, rng, extra)
    # Every view gets (n - junk)/k particles (the remainder spread at random), in random order.
    n_junk = int(round(junk * n))
    views = rng.permutation(np.concatenate([np.arange(n - n_junk) % k, np.full(n_junk, -1)]))
    angles = rng.uniform(0.0, 360.0, n) if rotate else np.zeros(n)
    shifts = rng.uniform(-shift, shift, (n, 2)) if shift > 0 else np.zeros((n, 2))
    ctf_params = None
    if ctf:
        defocus_u = rng.uniform(low, high, n)
        ctf_params = CtfParams.uniform(
            defocus_u=defocus_u,
            defocus_v=defocus_u - rng.uniform(0.0, MAX_ASTIGMATISM, n),
            defocus_angle=rng.uniform(0.0, 180.0, n),
            voltage=VOLTAGE,
            spherical_aberration=SPHERICAL_ABERRATION,
            amplitude_contrast=AMPLITUDE_CONTRAST,
        )
    tilts = azimuths = None
    if view_jitter > 0:
        tilts = extra.uniform(-view_jitter, view_jitter, n)
        azimuths = extra.uniform(0.0, 2 * np.pi, n)
    junk_kinds = np.full(n, -1, dtype=np.int64)
    junk_kinds[views < 0] = extra.integers(0, len(JUNK_KINDS), n_junk)
    truth = Simulation(
        images=None,
        views=views.astype(np.int64),
        angles=angles,
        shifts=shifts,
        ctf=ctf_params,
        clean_views=render(model, rotations, np.zeros(k), np.zeros((k, 2)), box),
        pixel_size=float(pixel_size),
        snr=float(snr),
        molecule=molecule,
        noise=noise,
        junk_kinds=junk_kinds,
        view_pairs=tuple(pairs),
        view_frames=rotations,
    )
    return _Plan(truth, model, rng, extra, tilts, azimuths, box)


def _fill(plan: _Plan, store: _Store, on_progress: Progress | None) -> None:
    """Draw every image into `store`, CHUNK_BYTES of images at a time: the noise-free particles first
    (their variance sets the noise level), then the noise added to each chunk read back."""
    truth, box = plan.truth, plan.box
    n, views, rotations = truth.n, truth.views, truth.view_frames
    peak = float(truth.clean_views.max(axis=(1, 2)).mean())

    def draw(frames: np.ndarray, a: np.ndarray, s: np.ndarray) -> np.ndarray:
        return render(plan.model, frames, a, s, box)

    batch = max(1, CHUNK_BYTES // (4 * box * box))
    variances = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch):
        part = slice(start, min(n, start + batch))
        frames = rotations[np.maximum(views[part], 0)]
        if plan.tilts is not None:
            frames = tilt_frames(frames, plan.tilts[part], plan.azimuths[part])
        chunk = np.asarray(draw(frames, truth.angles[part], truth.shifts[part]), dtype=np.float32)
        rows = np.flatnonzero(views[part] < 0)
        if len(rows):
            chunk[rows] = junk_boxes(truth.junk_kinds[start + rows], rotations, draw, box, peak, plan.extra)
        if truth.ctf is not None:
            chunk_ctf = truth.ctf.subset(np.arange(part.start, part.stop))
            chunk = np.asarray(apply_ctf(chunk, chunk_ctf, truth.pixel_size), dtype=np.float32)
        variances[part] = chunk.var(axis=(1, 2))
        store[part] = chunk
        if on_progress is not None:
            on_progress("particles", part.stop, n)
    # SNR is measured on the particles: junk has no signal to speak of.
    junk = truth.is_junk
    signal_variance = float(variances[~junk].mean() if junk.any() else variances.mean())
    noise_sigma = np.float32(np.sqrt(signal_variance / truth.snr))
    gain = pink_gain(box) if truth.noise == "pink" else None
    for start in range(0, n, batch):
        part = slice(start, min(n, start + batch))
        chunk = store[part]  # a view of an array in memory; a fresh copy from a file
        draws = plan.rng.standard_normal(chunk.shape, dtype=np.float32)
        if gain is not None:
            colour(draws, gain)
        chunk += noise_sigma * draws
        store[part] = chunk
        if on_progress is not None:
            on_progress("noise", part.stop, n)
    truth.angles[junk] = 0.0
    truth.shifts[junk] = 0.0


def simulate(
    n: int = 1000,
    k: int = 4,
    box: int = 64,
    snr: float = 1.0,
    rotate: bool = False,
    shift: float = 0.0,
    ctf: bool = False,
    defocus_range: tuple[float, float] = (10000.0, 25000.0),
    pixel_size: float = 2.0,
    seed: int = 0,
    *,
    molecule: str = "blobs",
    close_pairs: int = 0,
    view_jitter: float = 0.0,
    junk: float = 0.0,
    noise: str = "white",
) -> Simulation:
    """Simulate n boxes from k views in memory (see the module docstring for the conventions).

    close_pairs views get a partner view 8-12 degrees away (the partners count among the k);
    view_jitter tilts each particle's projection direction by up to that many degrees; a
    fraction `junk` of the boxes hold no proper particle (simulate_junk); noise is "white" or
    "pink" (1/f power spectrum). simulate_to_folder writes the same stack for any n in flat memory.
    """
    plan = _plan(
        n,
        k,
        box,
        snr,
        rotate,
        shift,
        ctf,
        defocus_range,
        pixel_size,
        seed,
        molecule,
        close_pairs,
        view_jitter,
        junk,
        noise,
    )
    images = np.empty((n, box, box), dtype=np.float32)
    _fill(plan, images, None)
    return replace(plan.truth, images=images)


def simulate_to_folder(
    out_dir: str | Path, *, on_progress: Progress | None = None, **params
) -> tuple[Simulation, dict[str, Path]]:
    """simulate(**params) written into out_dir as write_simulation writes it, chunk by chunk:
    the stack never sits in memory, so any n fits (the per-particle truth, about 150 bytes a
    particle, does). The same parameters give the same files as write_simulation(simulate(...)).
    Returns the truth (images None) and the paths written. on_progress(stage, done, n) follows
    the two passes over the stack ("particles", then "noise")."""
    from worker.engine.io.mrc import new_stack_file

    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(simulate).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown simulation parameter(s): {', '.join(sorted(unknown))}")
    plan = _plan(**{**defaults, **params})
    paths = _paths(out_dir)
    with new_stack_file(paths["particles"], plan.truth.n, plan.box, plan.truth.pixel_size) as stack:
        _fill(plan, stack, on_progress)
    _write_truth(plan.truth, paths)
    return plan.truth, paths


def _paths(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "particles": out / "particles.mrcs",
        "star": out / "particles.star",
        "truth": out / "truth.csv",
        "views": out / "views.mrcs",
    }


def write_simulation(sim: Simulation, out_dir: str | Path) -> dict[str, Path]:
    """Write particles.mrcs, particles.star, truth.csv and views.mrcs into out_dir."""
    from worker.engine.io.mrc import write_stack

    paths = _paths(out_dir)
    write_stack(paths["particles"], sim.images, sim.pixel_size)
    _write_truth(sim, paths)
    return paths


def _write_truth(sim: Simulation, paths: dict[str, Path]) -> None:
    """Everything but the stack: views.mrcs, particles.star and truth.csv (row by row)."""
    from worker.engine.io.atomic import temporary_sibling
    from worker.engine.io.mrc import write_stack
    from worker.engine.io.star import write_particles_star

    write_stack(paths["views"], sim.clean_views, sim.pixel_size)
    box = sim.clean_views.shape[-1]
    names = [f"{i + 1:06d}@particles.mrcs" for i in range(sim.n)]
    write_particles_star(paths["star"], names, None, sim.pixel_size, ctf=sim.ctf, image_size=box)
    ctf = sim.ctf
    has_junk = bool(sim.is_junk.any())
    with temporary_sibling(paths["truth"]) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["index", "image_name", "view", "angle", "shift_x", "shift_y", "defocus_u", "defocus_v"]
            + (["junk"] if has_junk else [])
        )
        for i in range(sim.n):
            du = f"{ctf.defocus_u[i]:.2f}" if ctf is not None else ""
            dv = f"{ctf.defocus_v[i]:.2f}" if ctf is not None else ""
            row = [
                i,
                names[i],
                int(sim.views[i]) + 1,
                f"{sim.angles[i]:.4f}",
                f"{sim.shifts[i, 0]:.4f}",
                f"{sim.shifts[i, 1]:.4f}",
                du,
                dv,
            ]
            if has_junk:
                kind = int(sim.junk_kinds[i])
                row.append(JUNK_KINDS[kind] if kind >= 0 else "")
            writer.writerow(row)


def read_truth(path: str | Path) -> np.ndarray:
    """The 0-based view of every particle from a truth.csv (-1 for junk)."""
    with open(path, newline="") as handle:
        return np.array([int(row["view"]) - 1 for row in csv.DictReader(handle)], dtype=np.int64)
