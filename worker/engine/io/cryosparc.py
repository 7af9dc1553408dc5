"""cryoSPARC particle files (.cs), read and written with cryosparc-tools.

A .cs file is a table with one row per particle: `uid`, the stack it lives in (`blob/path`,
relative to the cryoSPARC project folder), its 0-based place in that stack (`blob/idx`), the
pixel size (`blob/psize_A`) and, after CTF estimation, `ctf/*` (defocus in Å, angle in
radians, voltage in kV, Cs in mm). cryosparc-tools is an optional dependency
(`pip install 'cryoclust[cryosparc]'`); it is imported only when a .cs file is used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.engine.ctf import CtfParams
from worker.engine.errors import InputError
from worker.engine.io.atomic import temporary_sibling

CS_SUFFIX = ".cs"
# cryoSPARC marks files that were imported (linked into the project) with a leading ">".
IMPORTED_MARK = ">"
CTF_FIELDS = ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm", "ctf/amp_contrast")


@dataclass(frozen=True)
class CsParticles:
    """What a .cs particle file says, in cryoclust's terms."""

    uids: np.ndarray  # uint64 (N,)
    stack_paths: list[str]  # per particle, as written (relative to the project folder)
    frames: np.ndarray  # int64 (N,), 0-based
    pixel_size: float | None
    ctf: CtfParams | None


def _dataset_class():
    try:
        from cryosparc.dataset import Dataset
    except ImportError:
        raise InputError(
            "reading or writing cryoSPARC .cs files needs cryosparc-tools: pip install 'cryoclust[cryosparc]'"
        ) from None
    return Dataset


def read_particles_cs(path: Path) -> CsParticles:
    """Read the particle rows of a cryoSPARC .cs file; InputError for anything unusable."""
    dataset_class = _dataset_class()
    try:
        data = dataset_class.load(str(path))
    except Exception as exc:  # numpy and the library raise many kinds for a damaged file
        raise InputError(f"{path}: not a readable cryoSPARC .cs file ({exc})") from None
    fields = set(data.fields())
    missing = [f for f in ("uid", "blob/path", "blob/idx") if f not in fields]
    if missing:
        raise InputError(
            f"{path}: has no {', '.join(missing)} field(s); a particle .cs file "
            "names each particle's stack (blob/path) and place in it (blob/idx)"
        )
    if len(data) == 0:
        raise InputError(f"{path}: the particle table lists no particles")
    paths = [str(p).strip() for p in data["blob/path"]]
    paths = [p.removeprefix(IMPORTED_MARK) for p in paths]
    frames = np.asarray(data["blob/idx"], dtype=np.int64)
    pixel_size = None
    if "blob/psize_A" in fields:
        sizes = np.asarray(data["blob/psize_A"], dtype=np.float64)
        if np.all(sizes > 0):
            pixel_size = float(sizes[0])
    return CsParticles(
        np.asarray(data["uid"], dtype=np.uint64), paths, frames, pixel_size, _ctf(path, data, fields)
    )


def _ctf(path: Path, data, fields: set[str]) -> CtfParams | None:
    if "ctf/df1_A" not in fields:
        return None
    missing = [f for f in CTF_FIELDS if f not in fields]
    if missing:
        raise InputError(f"{path}: has ctf/df1_A but no {', '.join(missing)} (needed for the CTF)")
    values = {f: np.asarray(data[f], dtype=np.float64) for f in CTF_FIELDS}
    phase = (
        np.asarray(data["ctf/phase_shift_rad"], dtype=np.float64)
        if "ctf/phase_shift_rad" in fields
        else np.zeros(len(data))
    )
    return CtfParams(
        defocus_u=values["ctf/df1_A"],
        defocus_v=values["ctf/df2_A"],
        defocus_angle=np.rad2deg(values["ctf/df_angle_rad"]),
        voltage=values["ctf/accel_kv"],
        spherical_aberration=values["ctf/cs_mm"],
        amplitude_contrast=values["ctf/amp_contrast"],
        phase_shift=np.rad2deg(phase),
    )


def write_particles_cs(
    path: Path,
    uids: np.ndarray,
    stack_paths: list[str],
    frames: np.ndarray,
    box: int,
    pixel_size: float,
    classes: np.ndarray | None = None,
    ctf: CtfParams | None = None,
) -> None:
    """Write particles (their uids, stacks and 0-based frames) as a .cs file cryoSPARC can
    import; `classes` (1-based, as everywhere in cryoclust's files) go to alignments2D/class,
    which is 0-based in cryoSPARC."""
    dataset_class = _dataset_class()
    n = len(uids)
    if len(stack_paths) != n or len(frames) != n:
        raise ValueError(f"{path}: {n} uids but {len(stack_paths)} paths and {len(frames)} frames")
    fields = [("blob/path", "O"), ("blob/idx", "u4"), ("blob/shape", "u4", (2,)), ("blob/psize_A", "f4")]
    if classes is not None:
        fields.append(("alignments2D/class", "u4"))
    if ctf is not None:
        fields += [(f, "f4") for f in (*CTF_FIELDS, "ctf/phase_shift_rad")]
    data = dataset_class.allocate(n, fields)
    data["uid"] = np.asarray(uids, dtype=np.uint64)
    data["blob/path"] = list(stack_paths)
    data["blob/idx"] = np.asarray(frames, dtype=np.uint32)
    data["blob/shape"] = np.array([box, box], dtype=np.uint32)
    data["blob/psize_A"] = np.float32(pixel_size)
    if classes is not None:
        classes = np.asarray(classes)
        if len(classes) != n or (n and classes.min() < 1):
            raise ValueError(f"{path}: class numbers must be given for every particle, from 1")
        data["alignments2D/class"] = (classes - 1).astype(np.uint32)
    if ctf is not None:
        data["ctf/df1_A"] = ctf.defocus_u
        data["ctf/df2_A"] = ctf.defocus_v
        data["ctf/df_angle_rad"] = np.deg2rad(ctf.defocus_angle)
        data["ctf/accel_kv"] = ctf.voltage
        data["ctf/cs_mm"] = ctf.spherical_aberration
        data["ctf/amp_contrast"] = ctf.amplitude_contrast
        data["ctf/phase_shift_rad"] = np.deg2rad(ctf.phase_shift)
    with temporary_sibling(Path(path)) as tmp, open(tmp, "wb") as handle:
        data.save(handle)


def stable_uids(key: str, indices: np.ndarray) -> np.ndarray:
    """uids for particles that came without any (not from a .cs file): the high 32 bits from a
    hash of `key` (the dataset or input they belong to), the low 32 bits their 0-based index in
    it. The same particle gets the same uid in every export and every subset."""
    high = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big")
    return (np.uint64(high) << np.uint64(32)) | np.asarray(indices, dtype=np.uint64)


def split_image_names(names: list[str]) -> tuple[list[str], np.ndarray]:
    """RELION image names ("000003@stacks/a.mrcs") as .cs blob paths and 0-based frames."""
    paths, frames = [], np.zeros(len(names), dtype=np.int64)
    for row, name in enumerate(names):
        number, _, path = name.rpartition("@")
        paths.append(path)
        frames[row] = int(number) - 1 if number else 0
    return paths, frames


def write_stack_cs(
    path: Path, stack, image_names: list[str], uid_key: str, classes: np.ndarray | None = None
) -> Path:
    """A ParticleStack's particles as a .cs file: their uids (the .cs input's own, else
    stable_uids(uid_key, ...)), blob paths and frames from `image_names` (paths as the reader
    should find them), pixel size, CTF and, given 1-based `classes`, alignments2D/class."""
    uids = stack.uids if stack.uids is not None else stable_uids(uid_key, stack.indices)
    paths, frames = split_image_names(image_names)
    write_particles_cs(Path(path), uids, paths, frames, stack.box, stack.pixel_size, classes, stack.ctf)
    return Path(path)
