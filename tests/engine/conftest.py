"""Shared fixtures for the engine tests: tiny real MRC stacks, STAR files and pictures."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest


def _images(n: int, box: int, dtype, seed: int, ny: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, ny or box, box)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


@pytest.fixture
def make_mrc(tmp_path):
    """make_mrc(name, n=6, box=16, dtype=float32, pixel_size=1.25, stack=True) -> (path, data).

    Writes a real MRC file with mrcfile into tmp_path (sub-folders in `name` are created);
    stack=False marks a 3-D file as a volume (ispg 1), as a map would be.
    """

    def make(
        name: str = "particles.mrcs",
        n: int = 6,
        box: int = 16,
        dtype=np.float32,
        pixel_size: float = 1.25,
        stack: bool = True,
        seed: int = 0,
        ny: int | None = None,
        data: np.ndarray | None = None,
    ):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _images(n, box, dtype, seed, ny) if data is None else data
        with mrcfile.new(path, overwrite=True) as mrc, warnings.catch_warnings():
            if np.isrealobj(data) and not np.isfinite(data).all():
                # Bad-input tests write NaN/Inf on purpose; mrcfile's header stats warn.
                warnings.simplefilter("ignore", RuntimeWarning)
            mrc.set_data(data)
            if data.ndim == 3:
                mrc.set_image_stack() if stack else mrc.set_volume()
            mrc.voxel_size = pixel_size
        return path, data

    return make


@pytest.fixture
def patch_header():
    """patch_header(path, offset, fmt, value): overwrite one little-endian MRC header field."""

    def patch(path: Path, offset: int, fmt: str, value) -> None:
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(struct.pack("<" + fmt, value))

    return patch


@pytest.fixture
def write_star(tmp_path):
    """write_star(name, text) -> path: a STAR file from literal text (for odd or old layouts)."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write
