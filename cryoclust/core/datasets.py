"""Where a dataset's particles are and how to open them, for the API and the worker alike.

An uploaded dataset reads its own folder, DATA_DIR/datasets/<id>/. A derived dataset (a subset
made to clean and reclassify) copies no particle: its folder holds only indices.npy, the 0-based
indices of its particles in its base dataset's files, which it reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoclust.core.tables import Dataset
from worker.engine.io.particles import ParticleStack

INDICES_FILE = "indices.npy"


def files_dir(data_dir: Path, dataset: Dataset) -> Path:
    """The folder holding the particle files the dataset reads."""
    return Path(data_dir) / "datasets" / (dataset.base_id or dataset.id)


def main_path(data_dir: Path, dataset: Dataset) -> Path:
    return files_dir(data_dir, dataset) / dataset.path


def subset_indices(data_dir: Path, dataset: Dataset) -> np.ndarray | None:
    """A derived dataset's indices into its base's particles; None for an uploaded one."""
    if dataset.base_id is None:
        return None
    return np.load(Path(data_dir) / "datasets" / dataset.id / INDICES_FILE)


def write_indices(folder: Path, indices: np.ndarray) -> None:
    np.save(folder / INDICES_FILE, np.asarray(indices, dtype=np.int64))


def uid_key(dataset: Dataset) -> str:
    """What stable uids of a non-.cs dataset derive from: a particle keeps its uid in subsets."""
    return dataset.base_id or dataset.id


def open_stack(data_dir: Path, dataset: Dataset) -> ParticleStack:
    """The dataset's particles, exactly those of a subset, with the pixel size the user gave."""
    folder = files_dir(data_dir, dataset)
    stack = ParticleStack.open(folder / dataset.path, confine_to=folder)
    indices = subset_indices(data_dir, dataset)
    if indices is not None:
        stack = stack.subset(indices)
    if dataset.pixel_size_known and (not stack.pixel_size_known or stack.pixel_size != dataset.pixel_size):
        stack.set_pixel_size(dataset.pixel_size)
    return stack
