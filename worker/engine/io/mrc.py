"""MRC files: write particle stacks (float32, mode 2, image-stack header); check and map them.

Example:
    from worker.engine.io.mrc import write_stack
    write_stack("class_averages.mrcs", averages, pixel_size=1.34)
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from worker.engine.errors import InputError
from worker.engine.io.atomic import temporary_sibling

__all__ = ["MrcHeader", "open_mrc_data", "read_header", "write_stack"]


def write_stack(path: str | os.PathLike, images: np.ndarray, pixel_size: float = 1.0) -> Path:
    """Write images (k, ny, nx) or one image (ny, nx) as an MRC image stack; return the path.

    The file appears atomically (written beside it, then renamed), so a reader never sees a
    half-written stack. nz is the number of images, ispg = 0 and mz = 1 (the MRC2014 image-stack
    convention mrcfile uses), and the voxel size is pixel_size in x, y and z.
    """
    path = Path(path)
    data = np.asarray(images, dtype=np.float32)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3 or 0 in data.shape:
        raise ValueError(f"{path}: expected images shaped (k, ny, nx) with k >= 1, got {data.shape}")
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"{path}: pixel size must be positive, got {pixel_size}")
    with temporary_sibling(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data))
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size)
            mrc.update_header_stats()
    return path


# ----------------------------------------------------------------------------- reading

HEADER_BYTES = 1024
# MRC mode -> bytes per value for the modes a particle stack may use.
MODE_BYTES = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}
MODE_NAMES = {3: "complex int16", 4: "complex float32", 101: "4-bit packed"}


@dataclass(frozen=True)
class MrcHeader:
    """The header fields ParticleStack needs, checked against the file's real size."""

    path: Path
    nx: int
    ny: int
    nz: int
    mode: int
    ispg: int
    pixel_size: float | None  # None when the header leaves it at 0

    @property
    def is_volume(self) -> bool:
        """A 3-D map (ispg 1-230 with nz > 1) or a stack of maps (ispg 401-630)."""
        return (1 <= self.ispg <= 230 and self.nz > 1) or 401 <= self.ispg <= 630


def read_header(path: Path) -> MrcHeader:
    """Parse and sanity-check an MRC header without trusting its sizes; InputError if bad."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw = handle.read(HEADER_BYTES)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected an MRC file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(raw) < HEADER_BYTES:
        raise InputError(f"{path}: not an MRC file ({size} bytes, shorter than the 1024-byte header)")

    has_map_id = raw[208:212] == b"MAP "
    fields = _unpack(raw, _byte_order(raw))
    nx, ny, nz, mode, ispg, nsymbt, mx, cella_x = fields
    plausible = nx > 0 and ny > 0 and nz >= 0 and nsymbt >= 0 and 0 <= mode <= 200
    if not plausible or (not has_map_id and mode not in MODE_BYTES):
        raise InputError(f"{path}: not an MRC file (no valid MRC header)")
    if mode not in MODE_BYTES:
        kind = f" ({MODE_NAMES[mode]})" if mode in MODE_NAMES else ""
        raise InputError(f"{path}: unsupported MRC mode {mode}{kind}; expected 0, 1, 2, 6 or 12")
    if nz == 0:
        raise InputError(f"{path}: the stack is empty (nz = 0)")
    # Python ints: an absurd nz (10^9) gives a huge expected size, never an allocation.
    expected = HEADER_BYTES + nsymbt + nx * ny * nz * MODE_BYTES[mode]
    if size < expected:
        have = max(size - HEADER_BYTES - nsymbt, 0) // max(nx * ny * MODE_BYTES[mode], 1)
        raise InputError(
            f"{path}: truncated: the header promises {nz} images of {nx} x {ny} "
            f"({expected:,} bytes) but the file has {size:,} bytes (about {have} whole images)"
        )
    pixel = cella_x / mx if mx > 0 and cella_x > 0 and np.isfinite(cella_x) else None
    return MrcHeader(path, nx, ny, nz, mode, ispg, pixel)


def _byte_order(raw: bytes) -> str:
    stamp = raw[212]
    if stamp == 0x44:
        return "<"
    if stamp == 0x11:
        return ">"
    # No usable machine stamp (old files): take the order that gives a sensible mode.
    little = struct.unpack_from("<i", raw, 12)[0]
    return "<" if 0 <= little <= 200 else ">"


def _unpack(raw: bytes, order: str) -> tuple[int, int, int, int, int, int, int, float]:
    nx, ny, nz, mode = struct.unpack_from(order + "4i", raw, 0)
    mx = struct.unpack_from(order + "i", raw, 28)[0]
    cella_x = struct.unpack_from(order + "f", raw, 40)[0]
    ispg, nsymbt = struct.unpack_from(order + "2i", raw, 88)
    return nx, ny, nz, mode, ispg, nsymbt, mx, float(cella_x)


def open_mrc_data(header: MrcHeader) -> tuple[object, np.ndarray]:
    """Memory-map a checked MRC file; return (mrcfile handle, data shaped (nz, ny, nx))."""
    try:
        with warnings.catch_warnings():
            # Trailing bytes past the data only warn; read_header already checked the size.
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc = mrcfile.mmap(header.path, mode="r")
    except ValueError as strict_error:
        # Old or sloppy writers (no MAP id, odd stamps): read permissively, but only if the
        # data come out whole; otherwise report what the strict reader found.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mrc = mrcfile.mmap(header.path, mode="r", permissive=True)
            except (ValueError, OSError):
                mrc = None
        if mrc is None or mrc.data is None:
            if mrc is not None:
                mrc.close()
            raise InputError(f"{header.path}: not a readable MRC file ({strict_error})") from None
    except OSError as err:
        raise InputError(f"{header.path}: cannot read ({err})") from None
    data = mrc.data.reshape(header.nz, header.ny, header.nx)
    return mrc, data
