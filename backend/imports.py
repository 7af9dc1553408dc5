"""Import by path: which server paths may become datasets, and what their files hold.

Labs keep their stacks on shared storage; an import registers them where they lie instead of
sending them through the browser. Only files under CRYOCLUST_IMPORT_ROOTS are read, and every
refusal says why: import switched off, a `..` in the path, a relative path, a path outside the
roots, a link that leads out of them, a .star or .cs whose stacks lie outside its root.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from backend.services.errors import Forbidden, Invalid, NotFound, ServiceError
from backend.storage import ACCEPTED_SUFFIXES, StackInfo
from cryoclust.core.datasets import fingerprint
from worker.engine.errors import InputError


class Unsupported(ServiceError):
    status = 415


@dataclass
class ImportedFiles:
    path: Path  # the main file, links resolved
    root: Path  # the import root that holds it and every file it reads
    info: StackInfo
    records: list[dict]  # fingerprint: {path relative to root, size, mtime_ns}, main file first

    @property
    def size_bytes(self) -> int:
        return sum(r["size"] for r in self.records)

    @property
    def sha256(self) -> str:
        """A sha256 of the fingerprint: the files are not read whole at import."""
        return hashlib.sha256(json.dumps(self.records, sort_keys=True).encode()).hexdigest()


def _roots_text(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def resolve(raw: str, configured: list[Path]) -> tuple[Path, Path]:
    """(the file, links resolved; the import root it lies in) or a ServiceError saying why not.

    `configured`: CRYOCLUST_IMPORT_ROOTS as written. A path may be spelled under a root as
    written or as resolved, and must still lie under a root once its links are resolved.
    """
    if not configured:
        raise Forbidden(
            "import by path is off on this server: set CRYOCLUST_IMPORT_ROOTS to the folders "
            "it may read (or upload the files)"
        )
    written = [Path(os.path.abspath(r.expanduser())) for r in configured]
    resolved_roots = [r.resolve() for r in written]
    text = raw.strip()
    if not text or "\x00" in text:
        raise Invalid("give the server path of a .mrcs, .star or .cs file")
    path = Path(text)
    if ".." in path.parts:
        raise Forbidden(f"{text}: '..' is not allowed in an import path; give the path without it")
    if not path.is_absolute():
        raise Invalid(
            f"{text}: give an absolute path, under one of the import roots ({_roots_text(written)})"
        )
    path = Path(os.path.normpath(path))
    if not any(path.is_relative_to(r) for r in written + resolved_roots):
        raise Forbidden(f"{text} is outside the import roots ({_roots_text(written)})")
    target = path.resolve()
    root = next((r for r in resolved_roots if target.is_relative_to(r)), None)
    if root is None:
        raise Forbidden(f"{text} is a symbolic link (or lies under one) that leads outside the import roots")
    if not target.exists():
        raise NotFound(f"{text}: no such file")
    if target.is_dir():
        raise Invalid(f"{text} is a folder: give the .mrcs, .star or .cs file itself")
    if not target.name.lower().endswith(ACCEPTED_SUFFIXES):
        raise Unsupported(f"{text}: not a particle file (use .mrcs, .mrc, .star or .cs)")
    return target, root


def inspect(path: Path, root: Path) -> ImportedFiles:
    """Open the file as a job will (confined to its root), read its first and last particle,
    and take the fingerprint of every file it reads."""
    from worker.engine.io.particles import ParticleStack

    try:
        with ParticleStack.open(path, confine_to=root) as stack:
            n = len(stack)
            stack.read(0, 1)
            if n > 1:
                stack.read(n - 1, n)
            records = fingerprint(root, [path, *stack.files])
            info = StackInfo(
                n_particles=n,
                box_size=int(stack.box),
                pixel_size=float(stack.pixel_size),
                mode=stack.mode,
                has_ctf=stack.ctf is not None,
                files=[r["path"] for r in records],
                pixel_size_known=stack.pixel_size_known,
            )
    except PermissionError as exc:
        raise Forbidden(f"{exc.filename or path}: the server may not read this file") from None
    except (InputError, ValueError, OSError, KeyError, IndexError) as exc:
        raise ServiceError(str(exc) or f"{path}: unreadable ({type(exc).__name__})") from None
    return ImportedFiles(path=path, root=root, info=info, records=records)
