"""Read the result of a RELION 2D classification run: each particle's class and the class
averages (references) of one iteration.

Example:
    from worker.engine.io.relion_run import read_class2d
    result = read_class2d("work/run", iteration=25, n=2000)
    result.labels        # 0-based class of every particle, in the order of the input stack
    result.averages      # (K, box, box) float32, run_it025_classes.mrcs
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import starfile

from worker.engine.errors import InputError

__all__ = ["Class2DResult", "iteration_files", "read_class2d"]


@dataclass(frozen=True)
class Class2DResult:
    labels: np.ndarray  # int64 (N,) 0-based, in input-stack order
    averages: np.ndarray  # float32 (K, box, box)


def iteration_files(root: str | Path, iteration: int) -> tuple[Path, Path]:
    """(data star, classes mrcs) of one iteration, for RELION's `--o root`."""
    root = Path(root)
    stem = f"{root.name}_it{iteration:03d}"
    return root.with_name(f"{stem}_data.star"), root.with_name(f"{stem}_classes.mrcs")


def _stack_position(image_name: str) -> int:
    """'000123@particles.mrcs' -> 122 (RELION numbers images from 1)."""
    number, _, _ = str(image_name).strip().partition("@")
    return int(number) - 1


def read_class2d(root: str | Path, iteration: int, n: int) -> Class2DResult:
    """Labels of the n particles (matched by image name, not row order) and the averages."""
    data_star, classes_mrcs = iteration_files(root, iteration)
    for path in (data_star, classes_mrcs):
        if not path.is_file():
            raise InputError(f"{path}: missing; did the RELION run reach iteration {iteration}?")
    blocks = starfile.read(data_star, always_dict=True, parse_as_string=["rlnImageName"])
    particles = blocks.get("particles")
    if particles is None:  # RELION 3.0 files have a single unnamed loop
        particles = next(iter(blocks.values()))
    if not {"rlnImageName", "rlnClassNumber"} <= set(particles.columns):
        raise InputError(f"{data_star}: needs _rlnImageName and _rlnClassNumber columns")
    positions = np.array([_stack_position(name) for name in particles["rlnImageName"]])
    if len(positions) != n or sorted(positions.tolist()) != list(range(n)):
        raise InputError(f"{data_star}: lists {len(positions)} particles, expected each of {n} once")
    labels = np.empty(n, dtype=np.int64)
    labels[positions] = particles["rlnClassNumber"].to_numpy(dtype=np.int64) - 1
    with mrcfile.open(classes_mrcs, permissive=True) as mrc:
        averages = np.asarray(mrc.data, dtype=np.float32).copy()
    if averages.ndim == 2:
        averages = averages[None]
    if labels.min() < 0 or labels.max() >= len(averages):
        raise InputError(f"{data_star}: class numbers outside 1..{len(averages)}")
    return Class2DResult(labels, averages)
