"""Read and write RELION particle STAR files (3.1 style with an optics block; old style read too).

Example:
    from worker.engine.io.star import write_particles_star
    write_particles_star("particles.star", stack.image_names, class_numbers=labels + 1,
                         pixel_size=stack.pixel_size, ctf=stack.ctf)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from worker.engine.ctf import CtfParams
from worker.engine.errors import InputError
from worker.engine.io.atomic import temporary_sibling

__all__ = ["StarParticles", "read_particles_star", "write_particles_star"]

# CtfParams field -> RELION label. Per-optics-group in RELION 3.1, per-particle in old files.
CTF_LABELS = {
    "defocus_u": "rlnDefocusU",
    "defocus_v": "rlnDefocusV",
    "defocus_angle": "rlnDefocusAngle",
    "voltage": "rlnVoltage",
    "spherical_aberration": "rlnSphericalAberration",
    "amplitude_contrast": "rlnAmplitudeContrast",
    "phase_shift": "rlnPhaseShift",
}
PER_PARTICLE_CTF = ("defocus_u", "defocus_v", "defocus_angle", "phase_shift")
OPTICS_CTF = ("voltage", "spherical_aberration", "amplitude_contrast")


def relion_label(name: str) -> str:
    """'_rlnClassNumber', 'rlnClassNumber' and 'ClassNumber' all become 'rlnClassNumber'."""
    name = name.lstrip("_")
    return name if name.startswith("rln") else "rln" + name


# ----------------------------------------------------------------------------- writing


def write_particles_star(
    path: str | os.PathLike,
    image_names: Sequence[str],
    class_numbers: Sequence[int] | np.ndarray | None = None,
    pixel_size: float = 1.0,
    extra: Mapping[str, Sequence] | None = None,
    *,
    ctf: CtfParams | None = None,
    image_size: int | None = None,
) -> Path:
    """Write a RELION 3.1 particle STAR file (data_optics + data_particles) atomically.

    image_names are RELION image names ("000001@stack.mrcs", 1-based); class_numbers are
    1-based. extra adds per-particle columns ("rlnAnglePsi" or "AnglePsi"). With ctf, defocus
    and phase shift go in the particle table and voltage, Cs and amplitude contrast in one optics
    group per distinct combination (RELION needs those in the optics table).
    """
    path = Path(path)
    n = len(image_names)
    particles: dict[str, object] = {"rlnImageName": [str(name) for name in image_names]}

    if class_numbers is not None:
        classes = np.asarray(class_numbers)
        if classes.shape != (n,):
            raise ValueError(f"{path}: {len(classes)} class numbers for {n} particles")
        if n and (not np.issubdtype(classes.dtype, np.integer) or classes.min() < 1):
            raise ValueError(f"{path}: class numbers must be integers starting at 1")
        particles["rlnClassNumber"] = classes.astype(np.int64)

    optics = {"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]}
    group = np.ones(n, dtype=np.int64)
    if ctf is not None:
        optics, group = _ctf_optics_groups(ctf, n, path)
        for field in PER_PARTICLE_CTF:
            particles[CTF_LABELS[field]] = np.asarray(getattr(ctf, field), dtype=np.float64)
    n_groups = len(optics["rlnOpticsGroup"])
    optics["rlnImagePixelSize"] = [float(pixel_size)] * n_groups
    if image_size is not None:
        optics["rlnImageSize"] = [int(image_size)] * n_groups
    optics["rlnImageDimensionality"] = [2] * n_groups
    particles["rlnOpticsGroup"] = group

    for name, values in (extra or {}).items():
        values = np.asarray(values)
        if len(values) != n:
            raise ValueError(f"{path}: extra column {name!r} has {len(values)} values for {n} particles")
        particles[relion_label(name)] = values

    blocks = {"optics": pd.DataFrame(optics), "particles": pd.DataFrame(particles)}
    with temporary_sibling(path) as tmp:
        starfile.write(blocks, tmp)
    return path


def _ctf_optics_groups(ctf: CtfParams, n: int, path: Path) -> tuple[dict, np.ndarray]:
    """One optics group per distinct (voltage, Cs, amplitude contrast); group number per particle."""
    columns = [np.asarray(getattr(ctf, field), dtype=np.float64) for field in OPTICS_CTF]
    if any(c.shape != (n,) for c in columns):
        raise ValueError(f"{path}: CTF parameters are not {n} values each")
    table = np.stack(columns, axis=1) if n else np.zeros((0, 3))
    unique, inverse = np.unique(table, axis=0, return_inverse=True)
    optics: dict[str, list] = {
        "rlnOpticsGroup": list(range(1, len(unique) + 1)),
        "rlnOpticsGroupName": [f"opticsGroup{i}" for i in range(1, len(unique) + 1)],
    }
    for j, field in enumerate(OPTICS_CTF):
        optics[CTF_LABELS[field]] = unique[:, j].tolist()
    if not len(unique):  # no particles: keep one (empty-valued) group so the file stays valid
        optics = {"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]}
    return optics, np.asarray(inverse).reshape(-1).astype(np.int64) + 1


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class StarParticles:
    """What a particle STAR file says: image names, pixel size (None if absent) and CTF."""

    image_names: list[str]
    pixel_size: float | None
    ctf: CtfParams | None
    class_numbers: np.ndarray | None = None  # _rlnClassNumber, when the table has it


def read_particles_star(path: Path) -> StarParticles:
    """Read the particle table of a RELION STAR file, merging optics-group values into it."""
    blocks = _read_blocks(path)
    particles = _particle_table(path, blocks)
    optics = blocks.get("optics")
    if isinstance(optics, pd.DataFrame) and "rlnOpticsGroup" in optics.columns:
        particles = _merge_optics(path, particles, optics)
    names = [str(name).strip() for name in particles["rlnImageName"]]
    if not names:
        raise InputError(f"{path}: the particle table lists no particles")
    classes = None
    if "rlnClassNumber" in particles.columns:
        classes = _whole_numbers(path, particles, "rlnClassNumber")
    return StarParticles(names, _pixel_size(path, particles), _ctf(path, particles), classes)


def _read_blocks(path: Path) -> dict[str, object]:
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnImageName"])
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as err:
        detail = " ".join(str(err).split())  # parser messages may span lines
        raise InputError(f"{path}: not a readable STAR file ({type(err).__name__}: {detail})") from None
    if not blocks:
        raise InputError(f"{path}: not a STAR file (no data_ blocks found)")
    return blocks


def _particle_table(path: Path, blocks: dict[str, object]) -> pd.DataFrame:
    """The block holding _rlnImageName: 'particles' in RELION 3.1, the only loop in old files."""
    tables = {name: _as_frame(block) for name, block in blocks.items()}
    candidates = [name for name, table in tables.items() if "rlnImageName" in table.columns]
    if not candidates:
        found = ", ".join(f"data_{name}" for name in tables) or "none"
        raise InputError(f"{path}: no _rlnImageName column in any data block (blocks: {found})")
    name = "particles" if "particles" in candidates else candidates[0]
    return tables[name].reset_index(drop=True)


def _as_frame(block: object) -> pd.DataFrame:
    if isinstance(block, pd.DataFrame):
        return block
    if isinstance(block, Mapping):  # a key/value block is one row
        return pd.DataFrame([dict(block)])
    return pd.DataFrame()


def _merge_optics(path: Path, particles: pd.DataFrame, optics: pd.DataFrame) -> pd.DataFrame:
    """Copy optics-group columns onto each particle (particle values win where both exist)."""
    optics = optics.assign(rlnOpticsGroup=_group_numbers(path, optics))
    if "rlnOpticsGroup" in particles.columns:
        particles = particles.assign(rlnOpticsGroup=_group_numbers(path, particles))
    else:
        if len(optics) != 1:
            raise InputError(f"{path}: {len(optics)} optics groups but particles have no _rlnOpticsGroup")
        particles = particles.assign(rlnOpticsGroup=optics["rlnOpticsGroup"].iloc[0])
    extra = [c for c in optics.columns if c not in particles.columns or c == "rlnOpticsGroup"]
    table = optics[extra].drop_duplicates("rlnOpticsGroup")
    merged = particles.merge(table, on="rlnOpticsGroup", how="left", sort=False)
    known = set(table["rlnOpticsGroup"].tolist())
    missing = sorted(set(particles["rlnOpticsGroup"].tolist()) - known)
    if missing:
        raise InputError(f"{path}: particles refer to optics group(s) {missing[:5]} not in data_optics")
    return merged


def _group_numbers(path: Path, table: pd.DataFrame) -> np.ndarray:
    """Optics group numbers as integers (pandas cannot merge text or fractions with them)."""
    return _whole_numbers(path, table, "rlnOpticsGroup")


def _whole_numbers(path: Path, table: pd.DataFrame, label: str) -> np.ndarray:
    """A column of 32-bit whole numbers (group and class numbers), or one line saying which row is not."""
    values = _numbers(path, table, label)
    bad = np.flatnonzero((values != np.round(values)) | (np.abs(values) > 2**31 - 1))
    if len(bad):
        raise InputError(
            f"{path}: _{label} must be whole numbers; row {bad[0] + 1} has {table[label].iloc[bad[0]]!r}"
        )
    return values.astype(np.int64)


def _pixel_size(path: Path, particles: pd.DataFrame) -> float | None:
    values = None
    for label in ("rlnImagePixelSize", "rlnPixelSize"):
        if label in particles.columns:
            values = _numbers(path, particles, label)
            break
    else:
        if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(particles.columns):
            # RELION 3.0: detector pixel in µm, magnification unitless.
            with np.errstate(divide="ignore", invalid="ignore"):  # 0 is refused just below
                values = (
                    _numbers(path, particles, "rlnDetectorPixelSize")
                    * 1e4
                    / _numbers(path, particles, "rlnMagnification")
                )
    if values is None:
        return None
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"{path}: pixel size must be a positive number")
    low, high = float(values.min()), float(values.max())
    if high > low * 1.01:
        raise InputError(
            f"{path}: particles have different pixel sizes ({low:g} to {high:g} Å); "
            "rescale them to one pixel size first"
        )
    return float(values[0])


def _ctf(path: Path, particles: pd.DataFrame) -> CtfParams | None:
    if "rlnDefocusU" not in particles.columns:
        return None
    n = len(particles)
    required = [CTF_LABELS[f] for f in OPTICS_CTF if CTF_LABELS[f] not in particles.columns]
    if required:
        labels = ", ".join("_" + label for label in required)
        raise InputError(f"{path}: has _rlnDefocusU but no {labels} (needed for the CTF)")
    values = {}
    for field, label in CTF_LABELS.items():
        if label in particles.columns:
            values[field] = _numbers(path, particles, label)
        elif field == "defocus_v":
            values[field] = values["defocus_u"].copy()  # astigmatism unknown: round CTF
        else:
            values[field] = np.zeros(n)  # defocus angle, phase shift
    return CtfParams(**values)


def _numbers(path: Path, table: pd.DataFrame, label: str) -> np.ndarray:
    values = pd.to_numeric(table[label], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InputError(
            f"{path}: _{label} is not a number in row {bad[0] + 1} ({table[label].iloc[bad[0]]!r})"
        )
    return values
