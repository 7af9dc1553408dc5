"""Synthetic particle stacks with known classes, for tests, benchmarks and demos.

A seeded 3-D model made of Gaussian blobs (placed at random, so it has no symmetry) is projected
along k well separated directions: these are the k true classes ("views"). Each particle is one
view, optionally rotated in-plane by a uniform random angle and shifted, optionally multiplied by
a CTF with a random defocus, plus white Gaussian noise at a chosen SNR (signal variance over
noise variance, both measured over the whole box).

A Gaussian blob stays a Gaussian under projection, rotation and shift, so every particle is drawn
exactly (no interpolation): per particle the blob centres are moved, and the image is the sum of
separable Gaussians, one batched matrix product for the whole stack. numpy only.

Conventions (what truth.csv records): `angle` is the in-plane rotation in degrees applied to the
view, counter-clockwise in (x, y) with y the row index; `shift_x/shift_y` are the pixels the
rotated view was moved by. So particle(p) = view(R(-angle) (p - shift)); the image centre is
pixel (box//2, box//2).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.engine.ctf import CtfParams, apply_ctf

VOLTAGE = 300.0  # kV
SPHERICAL_ABERRATION = 2.7  # mm
AMPLITUDE_CONTRAST = 0.1
MAX_ASTIGMATISM = 600.0  # Å between defocus U and V
BLOB_COUNT = 14
BLOB_SIGMA = (0.02, 0.045)  # blob widths as fractions of the box
CHUNK = 2048  # particles drawn per batch


@dataclass(frozen=True)
class Simulation:
    """A simulated stack and its ground truth. `views` are 0-based class labels."""

    images: np.ndarray  # float32 (N, box, box)
    views: np.ndarray  # int64 (N,) 0-based
    angles: np.ndarray  # float64 (N,) degrees
    shifts: np.ndarray  # float64 (N, 2) pixels, (x, y)
    ctf: CtfParams | None
    clean_views: np.ndarray  # float32 (k, box, box): no rotation, shift, CTF or noise
    pixel_size: float
    snr: float

    @property
    def n(self) -> int:
        return len(self.views)

    @property
    def k(self) -> int:
        return len(self.clean_views)


@dataclass(frozen=True)
class BlobModel:
    """Gaussian blobs in 3-D, in pixels relative to the box centre."""

    centres: np.ndarray  # (M, 3)
    sigmas: np.ndarray  # (M,)
    weights: np.ndarray  # (M,) projected mass of each blob


def make_model(box: int, rng: np.random.Generator) -> BlobModel:
    """An asymmetric, elongated cluster of blobs that fits well inside the box."""
    axes = np.array([0.17, 0.12, 0.08]) * box
    centres = rng.normal(size=(BLOB_COUNT, 3)) * axes
    # Keep every blob inside a sphere of radius 0.3 box so shifted particles stay in the box.
    radius = np.linalg.norm(centres, axis=1, keepdims=True)
    centres *= np.minimum(1.0, 0.3 * box / np.maximum(radius, 1e-9))
    sigmas = rng.uniform(*BLOB_SIGMA, BLOB_COUNT) * box
    weights = rng.uniform(0.4, 1.6, BLOB_COUNT)
    return BlobModel(centres, sigmas, weights)


def view_rotations(k: int, rng: np.random.Generator, candidates: int = 4000) -> np.ndarray:
    """k rotations (k, 2, 3) whose projection directions are far apart (and far from each
    other's opposite, which would give a mirror image). Rows: the image x and y axes in 3-D."""
    directions = rng.normal(size=(candidates, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    chosen = [0]
    closeness = np.abs(directions @ directions[0])
    for _ in range(1, k):
        nxt = int(np.argmin(closeness))  # farthest point: smallest |cos| to every chosen axis
        chosen.append(nxt)
        closeness = np.maximum(closeness, np.abs(directions @ directions[nxt]))
    rotations = np.empty((k, 2, 3))
    for i, d in enumerate(directions[chosen]):
        helper = rng.normal(size=3)
        e1 = np.cross(d, helper)
        e1 /= np.linalg.norm(e1)
        rotations[i] = [e1, np.cross(d, e1)]
    return rotations


def render(
    model: BlobModel, rotations: np.ndarray, angles: np.ndarray, shifts: np.ndarray, box: int
) -> np.ndarray:
    """Exact projections: rotations (N,2,3), in-plane angles (N,) degrees, shifts (N,2) px."""
    xy = np.einsum("nij,mj->nmi", rotations, model.centres)  # (N, M, 2)
    theta = np.deg2rad(angles)[:, None]
    cos, sin = np.cos(theta), np.sin(theta)
    x = cos * xy[..., 0] - sin * xy[..., 1] + shifts[:, None, 0]
    y = sin * xy[..., 0] + cos * xy[..., 1] + shifts[:, None, 1]
    grid = np.arange(box, dtype=np.float64) - box // 2
    inv2s2 = (0.5 / model.sigmas**2)[None, :, None]
    norm = model.weights / (2 * np.pi * model.sigmas**2)
    gx = np.exp(-((grid[None, None, :] - x[..., None]) ** 2) * inv2s2)  # (N, M, box)
    gy = np.exp(-((grid[None, None, :] - y[..., None]) ** 2) * inv2s2) * norm[None, :, None]
    return np.matmul(gy.transpose(0, 2, 1), gx).astype(np.float32)  # (N, box_y, box_x)


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
) -> Simulation:
    """Simulate n particles from k views (see the module docstring for the conventions)."""
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
    low, high = sorted(float(d) for d in defocus_range)
    if ctf and low <= 0:
        raise ValueError(f"defocus must be positive (underfocus, Å), got {defocus_range}")

    rng = np.random.default_rng(seed)
    model = make_model(box, rng)
    rotations = view_rotations(k, rng)
    # Every view gets n/k particles (the remainder spread at random), in random order.
    views = rng.permutation(np.concatenate([np.arange(n) % k]))
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

    clean_views = render(model, rotations, np.zeros(k), np.zeros((k, 2)), box)
    images = np.empty((n, box, box), dtype=np.float32)
    for start in range(0, n, CHUNK):
        part = slice(start, min(n, start + CHUNK))
        images[part] = render(model, rotations[views[part]], angles[part], shifts[part], box)
        if ctf_params is not None:
            chunk_ctf = ctf_params.subset(np.arange(part.start, part.stop))
            images[part] = apply_ctf(images[part], chunk_ctf, pixel_size)
    signal_variance = float(images.var(axis=(1, 2)).mean())
    noise_sigma = np.float32(np.sqrt(signal_variance / snr))
    for start in range(0, n, CHUNK):
        part = images[start : start + CHUNK]
        part += noise_sigma * rng.standard_normal(part.shape, dtype=np.float32)
    return Simulation(
        images=images,
        views=views.astype(np.int64),
        angles=angles,
        shifts=shifts,
        ctf=ctf_params,
        clean_views=clean_views,
        pixel_size=float(pixel_size),
        snr=float(snr),
    )


def write_simulation(sim: Simulation, out_dir: str | Path) -> dict[str, Path]:
    """Write particles.mrcs, particles.star, truth.csv and views.mrcs into out_dir."""
    from worker.engine.io.mrc import write_stack
    from worker.engine.io.star import write_particles_star

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "particles": out / "particles.mrcs",
        "star": out / "particles.star",
        "truth": out / "truth.csv",
        "views": out / "views.mrcs",
    }
    write_stack(paths["particles"], sim.images, sim.pixel_size)
    write_stack(paths["views"], sim.clean_views, sim.pixel_size)
    names = [f"{i + 1:06d}@particles.mrcs" for i in range(sim.n)]
    box = sim.images.shape[-1]
    write_particles_star(paths["star"], names, None, sim.pixel_size, ctf=sim.ctf, image_size=box)
    ctf = sim.ctf
    with open(paths["truth"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["index", "image_name", "view", "angle", "shift_x", "shift_y", "defocus_u", "defocus_v"]
        )
        for i in range(sim.n):
            du = f"{ctf.defocus_u[i]:.2f}" if ctf is not None else ""
            dv = f"{ctf.defocus_v[i]:.2f}" if ctf is not None else ""
            writer.writerow(
                [i, names[i], int(sim.views[i]) + 1, f"{sim.angles[i]:.4f}",
                 f"{sim.shifts[i, 0]:.4f}", f"{sim.shifts[i, 1]:.4f}", du, dv]
            )
    return paths


def read_truth(path: str | Path) -> np.ndarray:
    """The 0-based view of every particle from a truth.csv."""
    with open(path, newline="") as handle:
        return np.array([int(row["view"]) - 1 for row in csv.DictReader(handle)], dtype=np.int64)
