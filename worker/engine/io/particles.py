"""ParticleStack: one lazy, memory-mapped reader for .mrcs/.mrc stacks, RELION .star files,
cryoSPARC .cs files and folders of stacks or picture files.

Example:
    from worker.engine.io import ParticleStack
    with ParticleStack.open("particles.star") as stack:
        print(len(stack), stack.box, stack.pixel_size, stack.ctf is not None)
        for start, images in stack.chunks(1024):
            ...  # float32 (k, box, box)
"""

from __future__ import annotations

import mmap
import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from worker.engine.ctf import CtfParams
from worker.engine.errors import InputError
from worker.engine.io.images import IMAGE_SUFFIXES, image_shape, read_image
from worker.engine.io.mrc import MrcHeader, open_mrc_data, read_header
from worker.engine.io.star import read_particles_star

__all__ = ["ParticleStack"]

STACK_SUFFIXES = (".mrcs", ".mrc")


def _max_open_files() -> int:
    """Memory maps to keep open at once: a star can name thousands of stacks, and each map
    holds a file descriptor, so stay well under the process's limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 4096
    except (ImportError, OSError, ValueError):  # no `resource` module off Unix
        soft = 1024
    return max(16, min(512, soft // 4))


MAX_OPEN_FILES = _max_open_files()
SEARCH_LEVELS = 3  # RELION and cryoSPARC name stacks relative to the project folder, 1-2 levels up


class _PictureFile:
    """One particle in a PNG/JPEG/TIFF file."""

    def __init__(self, path: Path):
        self.path = path
        self.ny, self.nx = image_shape(path)
        self.nz = 1


class ParticleStack:
    """N square particle images from one or more files, read lazily as float32."""

    max_open_files = MAX_OPEN_FILES  # per instance if need be (tests, tight descriptor limits)

    def __init__(
        self,
        source: Path,
        files: list[MrcHeader | _PictureFile],
        file_index: np.ndarray,
        frame: np.ndarray,
        names: Sequence[str] | None = None,
        pixel_size: float | None = None,
        ctf: CtfParams | None = None,
    ):
        self.source = source
        self._files = files
        self._file_index = file_index
        self._frame = frame
        self._names = list(names) if names is not None else None
        self.ctf = ctf
        self.n = len(file_index)
        if self.n == 0:
            raise InputError(f"{source}: the stack is empty")
        first = files[0]
        for f in files:
            if f.nx != f.ny:
                raise InputError(f"{f.path}: images are {f.nx} x {f.ny}; particles must be square")
            if f.nx != first.nx:
                raise InputError(
                    f"{source}: box sizes differ: {first.path.name} is {first.nx} px, "
                    f"{f.path.name} is {f.nx} px"
                )
        self.box = int(first.nx)
        stated = pixel_size is not None  # a .star or .cs column
        if pixel_size is None:
            pixel_size = getattr(first, "pixel_size", None)
        # Unknown: no star/cs column and an MRC header left at 0 or at the common default of 1.0.
        # Computation then goes on at 1 Å/px, but nothing should print Å from it.
        self.pixel_size_known = bool(pixel_size) and (stated or float(pixel_size) != 1.0)
        self.pixel_size = float(pixel_size) if pixel_size else 1.0
        self.mode = int(first.mode) if isinstance(first, MrcHeader) else None
        self.uids: np.ndarray | None = None  # cryoSPARC's particle uids, for a .cs input
        self.class_numbers: np.ndarray | None = None  # _rlnClassNumber of a .star input
        # 0-based place of each particle in the file it was opened from (changed by subset()).
        self.indices = np.arange(self.n, dtype=np.int64)
        self._open: OrderedDict[int, tuple[object, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike, confine_to: str | os.PathLike | None = None) -> ParticleStack:
        """Open a .mrcs/.mrc stack, a RELION .star file, a cryoSPARC .cs file, or a folder of
        stacks or pictures.

        With confine_to, every file read (the star's referenced stacks included) must lie
        inside that folder after resolving links, as the service requires for uploads.
        """
        path = Path(path)
        # Confinement is checked before a file is opened, so nothing outside is ever read.
        root = Path(confine_to).resolve() if confine_to is not None else None
        _require_inside(path, root, path)
        if not path.exists():
            raise InputError(f"{path}: file not found")
        if path.is_dir():
            return cls._open_folder(path, root)
        if path.suffix.lower() == ".star":
            return cls._open_star(path, root)
        if path.suffix.lower() == ".cs":
            return cls._open_cs(path, root)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return cls(path, [_PictureFile(path)], np.zeros(1, np.int32), np.zeros(1, np.int64), [path.name])
        header = _stack_header(path)
        return cls(path, [header], np.zeros(header.nz, np.int32), np.arange(header.nz))

    @classmethod
    def _open_folder(cls, folder: Path, root: Path | None) -> ParticleStack:
        entries = sorted(
            (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=_natural_key
        )
        for entry in entries:
            _require_inside(entry, root, folder)
        stacks = [p for p in entries if p.suffix.lower() in STACK_SUFFIXES]
        pictures = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if stacks:
            headers = [_stack_header(p) for p in stacks]
            counts = np.array([h.nz for h in headers])
            file_index = np.repeat(np.arange(len(headers), dtype=np.int32), counts)
            frame = np.concatenate([np.arange(c) for c in counts])
            return cls(folder, headers, file_index, frame)
        if pictures:
            files = [_PictureFile(p) for p in pictures]
            n = len(files)
            return cls(
                folder, files, np.arange(n, dtype=np.int32), np.zeros(n, np.int64), [p.name for p in pictures]
            )
        raise InputError(f"{folder}: no .mrcs/.mrc stacks or .png/.jpg/.tif images in this folder")

    @classmethod
    def _open_star(cls, star: Path, root: Path | None) -> ParticleStack:
        table = read_particles_star(star)
        stack_names, frames = [], np.empty(len(table.image_names), np.int64)
        for row, name in enumerate(table.image_names):
            number, _, file_name = name.rpartition("@")
            stack_names.append(re.sub(r":mrcs?$", "", file_name.strip()))  # RELION's "x.mrc:mrcs"
            try:
                k = int(number) if number else 1
            except ValueError:
                raise InputError(f"{star}: row {row + 1}: cannot read image name {name!r}") from None
            if k < 1:
                raise InputError(f"{star}: row {row + 1} ({name}): image numbers start at 1")
            frames[row] = k - 1
        headers, file_index = _locate_stacks(star, stack_names, frames, root, table.image_names)
        stack = cls(star, headers, file_index, frames, table.image_names, table.pixel_size, table.ctf)
        stack.class_numbers = table.class_numbers
        return stack

    @classmethod
    def _open_cs(cls, path: Path, root: Path | None) -> ParticleStack:
        from worker.engine.io.cryosparc import read_particles_cs

        table = read_particles_cs(path)
        labels = [f"{k + 1:06d}@{name}" for name, k in zip(table.stack_paths, table.frames.tolist())]
        headers, file_index = _locate_stacks(path, table.stack_paths, table.frames, root, labels)
        stack = cls(path, headers, file_index, table.frames, labels, table.pixel_size, table.ctf)
        stack.uids = table.uids
        return stack

    def subset(self, indices: Sequence[int] | np.ndarray) -> ParticleStack:
        """The particles at `indices` (0-based, in that order) as a stack of their own: the
        same files, read lazily as before; names, CTF, uids and class numbers follow along."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            raise InputError(f"{self.source}: a subset needs at least one particle")
        if idx.min() < 0 or idx.max() >= self.n:
            bad = idx[(idx < 0) | (idx >= self.n)][0]
            raise InputError(f"{self.source}: particle index {bad} is outside 0..{self.n - 1}")
        names = self.image_names
        part = ParticleStack(
            self.source,
            self._files,
            self._file_index[idx],
            self._frame[idx],
            [names[i] for i in idx.tolist()],
            self.pixel_size,
            self.ctf.subset(idx) if self.ctf is not None else None,
        )
        part.pixel_size_known = self.pixel_size_known
        part.uids = self.uids[idx] if self.uids is not None else None
        part.class_numbers = self.class_numbers[idx] if self.class_numbers is not None else None
        part.indices = self.indices[idx]
        part.max_open_files = self.max_open_files
        return part

    def set_pixel_size(self, pixel_size: float) -> None:
        """A pixel size the user states (Å/px), which wins over the file's."""
        if not np.isfinite(pixel_size) or pixel_size <= 0:
            raise InputError(f"pixel size must be a positive number of Å, got {pixel_size}")
        self.pixel_size = float(pixel_size)
        self.pixel_size_known = True

    # ------------------------------------------------------------------ description

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"ParticleStack({str(self.source)!r}, n={self.n}, box={self.box}, pixel_size={self.pixel_size:g})"
        )

    @property
    def files(self) -> list[Path]:
        """The data files this stack reads (not the .star itself)."""
        return [f.path for f in self._files]

    @property
    def image_names(self) -> list[str]:
        """RELION-style names: "000001@stack.mrcs" (1-based), as given in a star file."""
        if self._names is None:
            base = self.source if self.source.is_dir() else self.source.parent
            rel = [_relative_name(f.path, base) for f in self._files]
            pairs = zip(self._file_index.tolist(), self._frame.tolist())
            self._names = [f"{k + 1:06d}@{rel[f]}" for f, k in pairs]
        return self._names

    def image_names_relative_to(self, folder: str | os.PathLike) -> list[str]:
        """Image names whose paths work from `folder`, for a star file written there."""
        base = os.path.abspath(folder)
        rel = [Path(os.path.relpath(os.path.abspath(f.path), base)).as_posix() for f in self._files]
        pictures = [isinstance(f, _PictureFile) for f in self._files]
        pairs = zip(self._file_index.tolist(), self._frame.tolist())
        return [rel[f] if pictures[f] else f"{k + 1:06d}@{rel[f]}" for f, k in pairs]

    # ------------------------------------------------------------------ reading

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images start..stop-1 as float32 (k, box, box); InputError on NaN/Inf values."""
        stop = self.n if stop is None else stop
        if not 0 <= start <= stop <= self.n:
            raise IndexError(f"read({start}, {stop}) is outside 0..{self.n}")
        return self._gather(np.arange(start, stop))

    def read_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images at the given 0-based indices (any order, repeats allowed) as float32."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            bad = idx[(idx < 0) | (idx >= self.n)][0]
            raise IndexError(f"particle index {bad} is outside 0..{self.n - 1}")
        return self._gather(idx)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, images) for consecutive blocks of at most `size` images."""
        if size < 1:
            raise ValueError("chunk size must be at least 1")
        for start in range(0, self.n, size):
            yield start, self.read(start, min(start + size, self.n))

    def check_finite(self, chunk_size: int = 4096) -> None:
        """Scan every image in chunks; InputError naming the first particle with NaN/Inf."""
        for _ in self.chunks(chunk_size):
            pass

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.box, self.box), dtype=np.float32)
        if not len(idx):
            return out
        files = self._file_index[idx]
        frames = self._frame[idx]
        if files[0] == files[-1] and (files == files[0]).all():
            groups = [(int(files[0]), slice(None))]
        else:  # one read per file touched; a stable sort keeps each file's frames in order
            order = np.argsort(files, kind="stable")
            touched, starts = np.unique(files[order], return_index=True)
            ends = [*starts[1:], len(order)]
            groups = [(int(f), order[a:b]) for f, a, b in zip(touched, starts, ends)]
        for f, where in groups:
            self._read_file(f, frames[where], out, where)
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out).all(axis=(1, 2)))[0])
            path = self._files[files[bad]].path
            raise InputError(
                f"{path}: image {frames[bad] + 1} (particle index {idx[bad]}) contains NaN or Inf values"
            )
        return out

    def _read_file(self, f: int, frames: np.ndarray, out: np.ndarray, where: slice | np.ndarray) -> None:
        entry = self._files[f]
        if isinstance(entry, _PictureFile):
            out[where] = read_image(entry.path)
            return
        data = self._data(f)
        first = int(frames[0])
        if len(frames) == 1 or (frames[-1] - first == len(frames) - 1 and (np.diff(frames) == 1).all()):
            out[where] = data[first : first + len(frames)]  # a contiguous range: one slice of the map
        else:
            out[where] = data[frames]
        _release_pages(data)

    def _data(self, f: int) -> np.ndarray:
        """The memory-mapped data of file f, keeping at most MAX_OPEN_FILES maps open."""
        if f in self._open:
            self._open.move_to_end(f)
            return self._open[f][1]
        handle, data = open_mrc_data(self._files[f])
        self._open[f] = (handle, data)
        while len(self._open) > self.max_open_files:
            _, (old, _) = self._open.popitem(last=False)
            old.close()
        return data

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the memory maps (a later read opens them again)."""
        while self._open:
            _, (handle, _) = self._open.popitem()
            handle.close()

    def __enter__(self) -> ParticleStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Memory maps do not pickle; a copy in another process opens its own.
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state


def _stack_header(path: Path) -> MrcHeader:
    """Header of a file opened as a stack: .mrcs always is one; a .mrc must not be a volume."""
    header = read_header(path)
    if path.suffix.lower() != ".mrcs" and header.is_volume:
        raise InputError(
            f"{path}: is a 3-D volume (nz = {header.nz}, ispg = {header.ispg}), not a "
            "particle stack; rename it to .mrcs if it really is a stack of images"
        )
    return header


def _require_inside(path: Path, root: Path | None, source: Path) -> None:
    """InputError unless path (links resolved) lies inside root; no check when root is None."""
    if root is not None and not path.resolve().is_relative_to(root):
        raise InputError(f"{source}: refers to {path}, which is outside {root}")


def _locate_stacks(
    table: Path, stack_names: Sequence[str], frames: np.ndarray, root: Path | None, labels: Sequence[str]
) -> tuple[list[MrcHeader], np.ndarray]:
    """Headers of the stacks a particle table names, and each particle's index into them;
    InputError for a frame past the end of its stack (labels name the rows in messages)."""
    headers: list[MrcHeader] = []
    by_name: dict[str, int] = {}
    file_index = np.empty(len(stack_names), np.int32)
    for row, name in enumerate(stack_names):
        if name not in by_name:
            by_name[name] = len(headers)
            headers.append(read_header(_resolve_stack(table, name, row, root)))
        f = file_index[row] = by_name[name]
        if not 0 <= frames[row] < headers[f].nz:
            raise InputError(
                f"{table}: row {row + 1} ({labels[row]}) points past the end of "
                f"{headers[f].path}, which holds {headers[f].nz} images"
            )
    return headers, file_index


def _resolve_stack(star: Path, file_name: str, row: int, root: Path | None) -> Path:
    """Find a stack named in a particle table (.star or .cs): beside it, in a folder above it
    (RELION and cryoSPARC project layouts), or, as a last resort, by its bare name beside it."""
    name = file_name
    if not name:
        raise InputError(f"{star}: row {row + 1} has an empty image name")
    given = Path(name)
    if given.is_absolute():
        candidates = [given]
    else:
        folder = star.parent
        candidates = [folder / given] + [up / given for up in list(folder.parents)[:SEARCH_LEVELS]]
        # Uploads and copies flatten RELION's Extract/jobNNN/... folders: last, try the bare
        # file name beside the star.
        candidates.append(folder / given.name)
    # Confined: a name that leaves the folder is refused as written (without looking whether
    # it exists); the other places are only searched inside the folder.
    _require_inside(candidates[0], root, star)
    if root is not None:
        candidates = [c for c in candidates if c.resolve().is_relative_to(root)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = "" if given.is_absolute() else f" beside {star.name} or in the folders above it"
    raise InputError(f"{star}: row {row + 1} refers to {name}, which is not found{where}")


def _relative_name(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _natural_key(path: Path) -> list[object]:
    """Sort 'img2' before 'img10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _release_pages(data: np.ndarray) -> None:
    """Unmap the pages just copied out, so reading a large stack keeps the resident size flat.

    The pages stay in the page cache; a later read of the same images faults them back in.
    """
    mapping = getattr(data, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
