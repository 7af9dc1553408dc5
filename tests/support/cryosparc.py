"""A tiny cryoSPARC particle export: a .cs file (written with cryosparc-tools) and the stacks it
names, flat in one folder as an upload sends them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryosparc.dataset import Dataset

from support.stacks import write_stack


@dataclass
class CsExport:
    cs: Path
    stacks: list[Path]
    uids: np.ndarray  # per particle, in the .cs's order
    image_names: list[str]  # "000001@J3/extract/a.mrc": what the server reports for each row

    @property
    def files(self) -> list[Path]:
        return [self.cs, *self.stacks]


def write_cs_export(folder: Path, per_stack: int = 30, box: int = 32, pixel_size: float = 1.7) -> CsExport:
    """Two stacks of `per_stack` particles; the .cs lists them interleaved, with blob paths
    relative to a cryoSPARC project (J3/extract/...) as cryoSPARC writes them."""
    stacks = [
        write_stack(folder / f"{name}.mrc", n=per_stack, box=box, seed=seed, pixel_size=0.0)
        for seed, name in enumerate(("mic1_particles", "mic2_particles"))
    ]
    rows = [(s, k) for k in range(per_stack) for s in range(2)]
    data = Dataset.allocate(
        len(rows),
        [("blob/path", "O"), ("blob/idx", "u4"), ("blob/shape", "u4", (2,)), ("blob/psize_A", "f4")],
    )
    paths = [f"J3/extract/{stacks[s].name}" for s, _ in rows]
    data["blob/path"] = paths
    data["blob/idx"] = [k for _, k in rows]
    data["blob/shape"] = np.array([box, box])
    data["blob/psize_A"] = pixel_size
    cs = folder / "J5_particles.cs"
    data.save(str(cs))
    names = [f"{k + 1:06d}@{p}" for (_, k), p in zip(rows, paths)]
    return CsExport(cs, stacks, np.asarray(data["uid"]), names)
