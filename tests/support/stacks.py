"""Tiny real particle stacks, written with mrcfile (float32, fixed seeds)."""

from __future__ import annotations

import uuid
from pathlib import Path

import mrcfile
import numpy as np


def mrc_bytes(images: np.ndarray, folder: Path, pixel_size: float = 2.0) -> bytes:
    """The bytes of a valid MRC stack of `images`, written by mrcfile."""
    path = folder / f"valid-{uuid.uuid4().hex[:8]}.mrcs"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(images))
        mrc.set_image_stack()
        mrc.voxel_size = pixel_size
    data = path.read_bytes()
    path.unlink()
    return data


def three_kinds(n: int = 60, box: int = 32, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """A disc, a vertical bar and a horizontal bar in turn, plus noise: classifiable in an epoch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:box, :box] - box / 2
    shapes = [
        np.exp(-(xx**2 + yy**2) / (box / 6) ** 2),
        (np.abs(xx) < box / 6) * 1.0,
        (np.abs(yy) < box / 8) * 1.0,
    ]
    images = np.stack([shapes[i % 3] for i in range(n)]) + noise * rng.normal(size=(n, box, box))
    return images.astype(np.float32)


def write_stack(path: Path, n: int = 60, box: int = 32, seed: int = 0, pixel_size: float = 2.0) -> Path:
    """A real .mrcs of `three_kinds` images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mrc_bytes(three_kinds(n, box, seed), path.parent, pixel_size))
    return path
