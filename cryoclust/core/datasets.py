"""Where a dataset's particles are and how to open them, for the API and the worker alike.

An uploaded dataset reads its own folder, DATA_DIR/datasets/<id>/. A derived dataset (a subset
made to clean and reclassify) copies no particle: its folder holds only indices.npy, the 0-based
indices of its particles in its base dataset's files, which it reads.

An imported dataset (POST /api/datasets/import) copies nothing either: it reads its files where
they lie, under one of CRYOCLUST_IMPORT_ROOTS. Its row keeps the size and mtime of each file at
import, and opening it checks them first, so a job on files that changed or vanished since fails
with a reason instead of classifying other particles than the ones imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cryoclust.core.tables import Dataset
from worker.engine.errors import InputError
from worker.engine.io.particles import ParticleStack

INDICES_FILE = "indices.npy"


def files_dir(data_dir: Path, dataset: Dataset) -> Path:
    """The folder that holds (and confines) the particle files the dataset reads."""
    if dataset.import_root is not None:
        return Path(dataset.import_root)
    return Path(data_dir) / "datasets" / (dataset.base_id or dataset.id)


def main_path(data_dir: Path, dataset: Dataset) -> Path:
    if dataset.import_root is not None:
        return Path(dataset.import_root) / dataset.import_main
    return files_dir(data_dir, dataset) / dataset.path


def fingerprint(root: Path, paths: Iterable[Path]) -> list[dict]:
    """{path (relative to root, links resolved), size, mtime_ns} of each file, main file first."""
    records, seen = [], set()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        stat = resolved.stat()
        records.append(
            {
                "path": resolved.relative_to(root).as_posix(),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
        )
    return records


def _when(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def check_unchanged(dataset: Dataset) -> None:
    """InputError naming the first file of an imported dataset that vanished, changed size or
    was modified since the import (or that now leads outside its import root)."""
    root = Path(dataset.import_root)
    for record in dataset.import_files or []:
        path = root / record["path"]
        where = f"dataset {dataset.name!r}: {path}"
        try:
            resolved = path.resolve(strict=True)
            stat = resolved.stat()
        except FileNotFoundError:
            raise InputError(
                f"{where} vanished after import (it no longer exists); restore it or import the files again"
            ) from None
        if not resolved.is_relative_to(root):
            raise InputError(f"{where} now leads outside the import root {root}")
        if stat.st_size != record["size"]:
            raise InputError(
                f"{where} changed after import ({record['size']:,} bytes then, "
                f"{stat.st_size:,} now); import the files again"
            )
        if stat.st_mtime_ns != record["mtime_ns"]:
            raise InputError(
                f"{where} changed after import (modified {_when(stat.st_mtime_ns)}, "
                f"imported as of {_when(record['mtime_ns'])}); import the files again"
            )


def _check_same_files(dataset: Dataset, stack: ParticleStack) -> None:
    """The stacks the table leads to now are those of the import (a new file could shadow one)."""
    root = Path(dataset.import_root)
    recorded = {r["path"] for r in dataset.import_files or []}
    for path in stack.files:
        relative = Path(path).resolve().relative_to(root).as_posix()
        if relative not in recorded:
            raise InputError(
                f"dataset {dataset.name!r}: {dataset.imported_from} now reads {root / relative}, "
                "which it did not at import; import the files again"
            )


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
    if dataset.import_root is not None:
        check_unchanged(dataset)
    stack = ParticleStack.open(main_path(data_dir, dataset), confine_to=folder)
    if dataset.import_root is not None:
        try:
            _check_same_files(dataset, stack)
        except BaseException:
            stack.close()
            raise
    indices = subset_indices(data_dir, dataset)
    if indices is not None:
        stack = stack.subset(indices)
    if dataset.pixel_size_known and (not stack.pixel_size_known or stack.pixel_size != dataset.pixel_size):
        stack.set_pixel_size(dataset.pixel_size)
    return stack
