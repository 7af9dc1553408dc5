"""Files of the service under DATA_DIR: datasets, job outputs and temporary uploads.

    DATA_DIR/datasets/<id>/   the uploaded files (a stack, or a .star plus its stacks)
    DATA_DIR/jobs/<id>/       the engine's out_dir for that job
    DATA_DIR/tmp/             uploads in progress; renamed into datasets/ once valid

Everything appears in its final place by a rename, so nobody sees half a dataset.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from worker.engine.errors import InputError

STACK_SUFFIXES = (".mrcs", ".mrc")
TABLE_SUFFIXES = (".star", ".cs")  # particle tables that name their stacks
ACCEPTED_SUFFIXES = STACK_SUFFIXES + TABLE_SUFFIXES
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(Exception):
    """An upload refused with an HTTP status and a reason for the person who sent it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def safe_name(filename: str) -> str:
    """A user's file name reduced to a plain name inside the dataset folder (never a path)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")[:200]
    if not base or base in (".", ".."):
        raise UploadError(400, f"unusable file name {filename!r}")
    return base


@dataclass
class ReceivedFile:
    name: str
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class StackInfo:
    n_particles: int
    box_size: int
    pixel_size: float
    mode: int | None
    has_ctf: bool
    files: list[str] = field(default_factory=list)
    pixel_size_known: bool = True


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.datasets = self.root / "datasets"
        self.jobs = self.root / "jobs"
        self.tmp = self.root / "tmp"
        for folder in (self.datasets, self.jobs, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets / dataset_id

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def new_tmp_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))

    def tmp_file(self, suffix: str) -> Path:
        handle, name = tempfile.mkstemp(suffix=suffix, dir=self.tmp)
        os.close(handle)
        return Path(name)

    @staticmethod
    def remove(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def place_dataset(self, tmp_dir: Path, dataset_id: str) -> Path:
        """Move a validated upload into its final folder (one rename, same filesystem)."""
        final = self.dataset_dir(dataset_id)
        os.replace(tmp_dir, final)
        return final


def main_input(files: list[ReceivedFile]) -> ReceivedFile:
    """The file a dataset is opened from: the .star or .cs if there is one, else the single stack."""
    if not files:
        raise UploadError(400, "no file uploaded: send the stack in the form field 'files'")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise UploadError(400, f"two uploaded files have the same name: {sorted(names)}")
    for f in files:
        if not f.name.lower().endswith(ACCEPTED_SUFFIXES):
            raise UploadError(415, f"{f.name}: not a particle file (use .mrcs, .mrc, .star or .cs)")
        if f.size == 0:
            raise UploadError(400, f"{f.name}: the file is empty")
    tables = [f for f in files if f.name.lower().endswith(TABLE_SUFFIXES)]
    if len(tables) > 1:
        raise UploadError(400, f"one .star or .cs per dataset, got {len(tables)}")
    if tables:
        return tables[0]
    if len(files) > 1:
        raise UploadError(400, "several stacks need a .star or .cs that lists their particles")
    return files[0]


def inspect_stack(main: Path, folder: Path, uploaded: list[str]) -> StackInfo:
    """Open the upload as the engine will and read its first and last particle.

    Raises UploadError naming the file and the problem (not an MRC, truncated, star whose stacks
    are missing or lie outside the upload, stacks the star does not use).
    """
    from worker.engine.io.particles import ParticleStack

    try:
        with ParticleStack.open(main, confine_to=folder) as stack:
            n = len(stack)
            if n < 1:
                raise InputError(f"{main.name}: no particles")
            used = []
            for path in stack.files:
                resolved = Path(path).resolve()
                if resolved.parent != folder.resolve():
                    raise InputError(
                        f"{main.name}: refers to {path.name}, which is not among the uploaded files"
                    )
                used.append(resolved.name)
            unused = sorted(set(uploaded) - set(used) - {main.name})
            if unused:
                raise InputError(f"{main.name}: does not use the uploaded file(s) {', '.join(unused)}")
            stack.read(0, 1)
            if n > 1:
                stack.read(n - 1, n)
            return StackInfo(
                n_particles=n,
                box_size=int(stack.box),
                pixel_size=float(stack.pixel_size),
                mode=stack.mode,
                has_ctf=stack.ctf is not None,
                files=sorted(set(used) | {main.name}),
                pixel_size_known=stack.pixel_size_known,
            )
    except UploadError:
        raise
    except (InputError, ValueError, OSError, KeyError, IndexError) as exc:
        message = str(exc).replace(str(folder.resolve()) + os.sep, "").replace(str(folder) + os.sep, "")
        raise UploadError(400, message or f"{main.name}: unreadable ({type(exc).__name__})") from None


def combined_sha256(files: list[ReceivedFile]) -> str:
    """One file: its sha256. Several: the sha256 of their `sha256sum` lines, sorted by name."""
    if len(files) == 1:
        return files[0].sha256
    lines = "".join(f"{f.sha256}  {f.name}\n" for f in sorted(files, key=lambda f: f.name))
    return hashlib.sha256(lines.encode()).hexdigest()


class StackCache:
    """A few open stacks, so a page of thumbnails does not re-read a .star per image."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._stacks: OrderedDict[Path, object] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, path: Path, reader):
        """`reader(stack)` on the open stack of `path`; one reader at a time (file handles)."""
        from worker.engine.io.particles import ParticleStack

        with self._lock:
            stack = self._stacks.pop(path, None)
            if stack is None:
                stack = ParticleStack.open(path)
            self._stacks[path] = stack
            while len(self._stacks) > self.size:
                _, old = self._stacks.popitem(last=False)
                old.close()
            return reader(stack)

    def drop(self, folder: Path) -> None:
        with self._lock:
            for path in [p for p in self._stacks if folder in p.parents]:
                self._stacks.pop(path).close()

    def clear(self) -> None:
        with self._lock:
            while self._stacks:
                self._stacks.popitem()[1].close()
