"""3-D models the simulator projects, and the projection directions (views) it uses.

Every model is a set of 3-D Gaussian blobs: a Gaussian stays a Gaussian under projection,
in-plane rotation and shift, so `render` draws particles exactly (no interpolation).

- "blobs": 14 blobs of different sizes placed at random in an elongated cloud; no symmetry.
- "ring": a ring of 7 two-bead subunits (a pseudo-7-fold complex, like a chaperonin or a
  ring ATPase seen at low resolution) with an arm of 3 beads and a knob sticking out of one
  subunit, which breaks the symmetry. Top views show a hole, side views a bar with the arm.

A view is a frame (2, 3): its rows are the image x and y axes in 3-D; the projection direction is
their cross product. `tilt_frames` turns frames about an in-plane axis, which tilts the
projection direction by exactly the given angle: this makes close view pairs and the
per-particle jitter of the direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOLECULES = ("blobs", "ring")
BLOB_COUNT = 14
BLOB_SIGMA = (0.02, 0.045)  # blob widths as fractions of the box
MAX_RADIUS = 0.3  # every blob centre within 0.3 box of the centre, so shifted particles fit
RING_SUBUNITS = 7


@dataclass(frozen=True)
class BlobModel:
    """Gaussian blobs in 3-D, in pixels relative to the box centre."""

    centres: np.ndarray  # (M, 3)
    sigmas: np.ndarray  # (M,)
    weights: np.ndarray  # (M,) projected mass of each blob


def _fit_inside(centres: np.ndarray, box: int) -> np.ndarray:
    radius = np.linalg.norm(centres, axis=1, keepdims=True)
    return centres * np.minimum(1.0, MAX_RADIUS * box / np.maximum(radius, 1e-9))


def make_model(box: int, rng: np.random.Generator) -> BlobModel:
    """An asymmetric, elongated cluster of blobs that fits well inside the box."""
    axes = np.array([0.17, 0.12, 0.08]) * box
    centres = _fit_inside(rng.normal(size=(BLOB_COUNT, 3)) * axes, box)
    sigmas = rng.uniform(*BLOB_SIGMA, BLOB_COUNT) * box
    weights = rng.uniform(0.4, 1.6, BLOB_COUNT)
    return BlobModel(centres, sigmas, weights)


def make_ring_model(box: int, rng: np.random.Generator) -> BlobModel:
    """A ring of two-bead subunits with one asymmetric arm (see the module docstring)."""
    radius = 0.14 * box
    phases = 2 * np.pi * np.arange(RING_SUBUNITS) / RING_SUBUNITS
    phases = phases + rng.uniform(-0.05, 0.05, RING_SUBUNITS)  # a real ring is not perfect
    outer = np.stack(
        [radius * np.cos(phases), radius * np.sin(phases), np.full(RING_SUBUNITS, 0.03 * box)], axis=1
    )
    inner = np.stack(
        [0.75 * radius * np.cos(phases), 0.75 * radius * np.sin(phases), np.full(RING_SUBUNITS, -0.05 * box)],
        axis=1,
    )
    # The arm leaves subunit 0 outwards and upwards, ending in a larger knob.
    direction = np.array([np.cos(phases[0]), np.sin(phases[0]), 0.0])
    steps = np.arange(1, 4)[:, None]
    arm = outer[0] + steps * (0.045 * box * direction + np.array([0.0, 0.0, 0.035 * box]))
    centres = _fit_inside(np.concatenate([outer, inner, arm]), box)
    sigmas = np.concatenate(
        [
            np.full(RING_SUBUNITS, 0.04 * box),
            np.full(RING_SUBUNITS, 0.03 * box),
            np.array([0.022, 0.022, 0.04]) * box,
        ]
    )
    weights = np.concatenate(
        [
            rng.uniform(0.9, 1.1, RING_SUBUNITS),
            rng.uniform(0.5, 0.7, RING_SUBUNITS),
            np.array([0.35, 0.35, 1.2]),
        ]
    )
    return BlobModel(centres, sigmas, weights)


def molecule_model(molecule: str, box: int, rng: np.random.Generator) -> BlobModel:
    if molecule == "blobs":
        return make_model(box, rng)
    if molecule == "ring":
        return make_ring_model(box, rng)
    raise ValueError(f"unknown molecule {molecule!r}; choose one of {', '.join(MOLECULES)}")


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


def projection_directions(frames: np.ndarray) -> np.ndarray:
    """Unit projection directions (..., 3) of frames (..., 2, 3)."""
    return np.cross(frames[..., 0, :], frames[..., 1, :])


def tilt_frames(frames: np.ndarray, tilts: np.ndarray, azimuths: np.ndarray) -> np.ndarray:
    """Frames (N, 2, 3) turned by `tilts` degrees about the in-plane axis at `azimuths` radians
    (measured from the frame's x axis): the projection direction moves by exactly `tilts`."""
    e1, e2 = frames[:, 0], frames[:, 1]
    axis = np.cos(azimuths)[:, None] * e1 + np.sin(azimuths)[:, None] * e2
    a = np.deg2rad(tilts)[:, None]

    def turn(v: np.ndarray) -> np.ndarray:  # Rodrigues' formula, axis perpendicular or not
        return (
            v * np.cos(a)
            + np.cross(axis, v) * np.sin(a)
            + axis * np.sum(axis * v, axis=1, keepdims=True) * (1 - np.cos(a))
        )

    return np.stack([turn(e1), turn(e2)], axis=1)


def views_with_close_pairs(
    k: int,
    pairs: int,
    rng: np.random.Generator,
    extra: np.random.Generator,
    separation: tuple[float, float] = (8.0, 12.0),
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """k frames: k - pairs far-apart views, then `pairs` partners, each `separation` degrees
    from a different one of them. Returns the frames and the (view, partner) index pairs."""
    if not 0 <= pairs <= k // 2:
        raise ValueError(f"close pairs must be between 0 and k/2 = {k // 2}, got {pairs}")
    base = view_rotations(k - pairs, rng)
    if pairs == 0:
        return base, []
    chosen = np.sort(extra.choice(k - pairs, pairs, replace=False))
    partners = tilt_frames(
        base[chosen], extra.uniform(*separation, pairs), extra.uniform(0.0, 2 * np.pi, pairs)
    )
    index_pairs = [(int(c), k - pairs + i) for i, c in enumerate(chosen)]
    return np.concatenate([base, partners]), index_pairs


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
