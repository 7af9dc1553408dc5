"""MRC files: write particle stacks (float32, mode 2, image-stack header); check and map them.

Example:
    from worker.engine.io.mrc import new_stack_file, write_stack
    write_stack("class_averages.mrcs", averages, pixel_size=1.34)
    with new_stack_file("particles.mrcs", n, box, pixel_size=2.0) as stack:
        for start in range(0, n, 1000):
            stack[start : start + 1000] = chunk  # flat memory, any n
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from worker.engine.errors import InputError
from worker.engine.io.atomic import temporary_sibling

__all__ = ["MrcHeader", "StackFile", "new_stack_file", "open_mrc_data", "read_header", "write_stack"]


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


class StackFile:
    """A float32 image stack being written chunk by chunk: `stack[a:b] = images` writes them,
    `stack[a:b]` reads them back (a fresh array). Plain file reads and writes, not a memory map,
    so what is written never counts as this process's memory. Header statistics follow the last
    images written to each row range."""

    def __init__(self, fd: int, offset: int, dtype: np.dtype, n: int, box: int) -> None:
        self._fd, self._offset, self._dtype = fd, offset, np.dtype(dtype)
        self.shape = (n, box, box)
        self._image_bytes = box * box * self._dtype.itemsize
        self._stats: dict[tuple[int, int], tuple[float, float, float, float, int]] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, rows: slice) -> tuple[int, int]:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1 or stop <= start:
            raise IndexError(f"a stack file takes a plain, non-empty row range, got {rows}")
        return start, stop

    def __setitem__(self, rows: slice, images: np.ndarray) -> None:
        start, stop = self._rows(rows)
        data = np.ascontiguousarray(images, dtype=self._dtype)
        if data.shape != (stop - start, *self.shape[1:]):
            raise ValueError(
                f"rows {start}:{stop} take images {(stop - start, *self.shape[1:])}, got {data.shape}"
            )
        view, position = memoryview(data).cast("B"), self._offset + start * self._image_bytes
        while view:
            written = os.pwrite(self._fd, view, position)
            view, position = view[written:], position + written
        # float64 sums, so the mean and rms of a large stack keep their digits.
        values = data.astype(np.float64)
        self._stats[(start, stop)] = (
            float(values.min()),
            float(values.max()),
            float(values.sum()),
            float(np.square(values).sum()),
            values.size,
        )

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop = self._rows(rows)
        out = np.empty((stop - start, *self.shape[1:]), dtype=self._dtype)
        view, position = memoryview(out).cast("B"), self._offset + start * self._image_bytes
        while view:
            read = os.preadv(self._fd, [view], position)
            if read == 0:
                raise OSError(f"rows {start}:{stop} lie past the end of the stack file")
            view, position = view[read:], position + read
        return out

    def statistics(self) -> tuple[float, float, float, float]:
        """(min, max, mean, rms) of everything written, as the MRC header records them."""
        covered = sorted(self._stats)
        if sum(stop - start for start, stop in covered) != self.shape[0] or any(
            a[1] > b[0] for a, b in zip(covered, covered[1:])
        ):
            raise ValueError("every image of a stack file must be written once, in whole row ranges")
        parts = self._stats.values()
        count = sum(p[4] for p in parts)
        mean = sum(p[2] for p in parts) / count
        variance = max(sum(p[3] for p in parts) / count - mean * mean, 0.0)
        return min(p[0] for p in parts), max(p[1] for p in parts), mean, variance**0.5


@contextlib.contextmanager
def new_stack_file(path: str | os.PathLike, n: int, box: int, pixel_size: float = 1.0) -> Iterator[StackFile]:
    """Write an (n, box, box) float32 MRC image stack of any size in flat memory.

    The header (nz = n, mode 2, image-stack convention, voxel size) is written first for the
    whole stack; the caller fills every row range through the yielded StackFile. The file
    appears atomically when the block ends without an error, as with write_stack.
    """
    path = Path(path)
    if n < 1 or box < 1:
        raise ValueError(f"{path}: a stack needs at least one image of at least one pixel, got {n} x {box}")
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"{path}: pixel size must be positive, got {pixel_size}")
    with temporary_sibling(path) as tmp:
        # new_mmap sizes the file (sparse) and writes the header; the data go through the file.
        with mrcfile.new_mmap(tmp, shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size)
            offset = mrc.header.nbytes + int(mrc.header.nsymbt)
            fd = os.open(tmp, os.O_RDWR)
            try:
                stack = StackFile(fd, offset, mrc.data.dtype, n, box)
                yield stack
            finally:
                os.close(fd)
            low, high, mean, rms = stack.statistics()
            mrc.header.dmin, mrc.header.dmax = np.float32(low), np.float32(high)
            mrc.header.dmean, mrc.header.rms = np.float32(mean), np.float32(rms)


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
