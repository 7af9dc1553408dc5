"""Datasets: register an upload, list, get, delete (with the finished jobs that used it)."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import artifacts, imports
from backend.services.errors import Conflict, Invalid, NotFound
from backend.storage import (
    ReceivedFile,
    StackCache,
    Storage,
    combined_sha256,
    inspect_stack,
    main_input,
)
from cryoclust.core import datasets as dataset_files
from cryoclust.core.tables import TERMINAL, Dataset, Job, new_id


def add(
    session: Session,
    storage: Storage,
    tmp_dir: Path,
    files: list[ReceivedFile],
    name: str | None,
    pixel_size: float | None = None,
) -> Dataset:
    """Validate the files in `tmp_dir`, move them to their dataset folder and add the row.

    `pixel_size` (Å/px), when the user gives it, wins over what the files say. Leaves nothing
    behind when anything fails: the caller removes `tmp_dir`, this removes the final folder if
    the row cannot be written.
    """
    main = main_input(files)
    info = inspect_stack(main.path, tmp_dir, [f.name for f in files])
    if pixel_size is not None:
        info.pixel_size, info.pixel_size_known = float(pixel_size), True
    dataset_id = new_id()
    final = storage.place_dataset(tmp_dir, dataset_id)
    with _row_or_nothing(session, storage, final):
        dataset = Dataset(
            id=dataset_id,
            name=(name or main.name)[:200],
            path=main.name,
            files=info.files,
            n_particles=info.n_particles,
            box_size=info.box_size,
            pixel_size=info.pixel_size,
            pixel_size_known=info.pixel_size_known,
            mode=info.mode,
            size_bytes=sum(f.size for f in files),
            sha256=combined_sha256(files),
            has_ctf=info.has_ctf,
        )
        session.add(dataset)
        session.commit()
    return dataset


def import_path(
    session: Session, roots: list[Path], raw_path: str, name: str | None, pixel_size: float | None = None
) -> Dataset:
    """Register files already on the server (under one of `roots`) as a dataset, read in place.

    Nothing is copied: the row records where the files are and their sizes and mtimes, which a
    job checks before it reads them.
    """
    path, root = imports.resolve(raw_path, roots)
    found = imports.inspect(path, root)
    info = found.info
    if pixel_size is not None:
        info.pixel_size, info.pixel_size_known = float(pixel_size), True
    dataset = Dataset(
        id=new_id(),
        name=(name or path.name)[:200],
        path=path.name[:300],
        files=info.files,
        n_particles=info.n_particles,
        box_size=info.box_size,
        pixel_size=info.pixel_size,
        pixel_size_known=info.pixel_size_known,
        mode=info.mode,
        size_bytes=found.size_bytes,
        sha256=found.sha256,
        has_ctf=info.has_ctf,
        import_root=str(root),
        import_main=found.records[0]["path"],
        import_files=found.records,
    )
    with _row_or_nothing(session):
        session.add(dataset)
        session.commit()
    return dataset


def get(session: Session, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset


def newest_first(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at.desc())))


def delete(session: Session, storage: Storage, stacks: StackCache, dataset_id: str) -> None:
    """Delete a dataset, its files, and its finished jobs with their results."""
    dataset = get(session, dataset_id)
    children = list(session.scalars(select(Dataset.id).where(Dataset.parent_id == dataset_id)))
    if children:
        raise Conflict(
            f"datasets {', '.join(children)} were derived from dataset {dataset_id}; delete them first"
        )
    jobs = list(session.scalars(select(Job).where(Job.dataset_id == dataset_id)))
    active = [job.id for job in jobs if job.status not in TERMINAL]
    if active:
        raise Conflict(f"dataset {dataset_id} has unfinished jobs: {', '.join(active)}; cancel them first")
    for job in jobs:
        session.delete(job)
    session.flush()  # the jobs first: no relationship tells the unit of work their order
    session.delete(dataset)
    session.commit()
    stacks.drop(storage.dataset_dir(dataset_id))
    if dataset.import_root is not None:  # its files are the lab's: only close them
        stacks.drop(dataset_files.main_path(storage.root, dataset).parent)
    for job in jobs:
        storage.remove(storage.job_dir(job.id))
    storage.remove(storage.dataset_dir(dataset_id))


def particle(session: Session, storage: Storage, stacks: StackCache, dataset_id: str, index: int):
    """One particle image (index 0-based), read through the cache of open stacks."""
    dataset = get(session, dataset_id)
    if not 0 <= index < dataset.n_particles:
        raise NotFound(f"particle {index} is outside 0..{dataset.n_particles - 1}")
    path = dataset_files.main_path(storage.root, dataset)
    indices = dataset_files.subset_indices(storage.root, dataset)
    if indices is not None:
        index = int(indices[index])
    try:
        return stacks.read(path, lambda stack: stack.read(index, index + 1)[0])
    except (ValueError, OSError) as exc:
        raise Invalid(f"cannot read particle {index}: {exc}") from None


def derive(
    session: Session,
    storage: Storage,
    parent_id: str,
    *,
    job_id: str | None = None,
    round_ref: str | int = "final",
    classes: list[int] | None = None,
    indices: list[int] | None = None,
    name: str | None = None,
) -> Dataset:
    """A new dataset of some of the parent's particles (by index; no file is copied): those a
    job's round put in `classes`, or the explicit `indices` (0-based in the parent)."""
    parent = get(session, parent_id)
    source_round = None
    if classes is not None:
        if job_id is None:
            raise Invalid("choosing by classes needs the job_id whose classes they are")
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job.dataset_id != parent.id:
            raise Invalid(f"job {job_id} classified dataset {job.dataset_id}, not {parent.id}")
        source_round, folder = artifacts.resolve_round(storage.job_dir(job.id), round_ref)
        artifacts.check_classes(folder, classes)
        classes = sorted(set(classes))
        chosen = np.flatnonzero(np.isin(artifacts.labels(folder) + 1, classes))
        if chosen.size == 0:
            raise Invalid(f"classes {classes} of round {source_round} have no members")
    elif indices is not None:
        chosen = np.unique(np.asarray(indices, dtype=np.int64))
        if chosen.size == 0:
            raise Invalid("give at least one particle index")
        if chosen[0] < 0 or chosen[-1] >= parent.n_particles:
            raise Invalid(f"particle indices must lie in 0..{parent.n_particles - 1}")
    else:
        raise Invalid("give classes (with job_id) or indices")
    above = dataset_files.subset_indices(storage.root, parent)
    base_indices = above[chosen] if above is not None else chosen
    if name is None:
        what = f"classes {','.join(map(str, classes))}" if classes is not None else f"{chosen.size} particles"
        name = f"{parent.name} / {what}"
    tmp_dir = storage.new_tmp_dir("subset-")
    try:
        dataset_files.write_indices(tmp_dir, base_indices)
        data = (tmp_dir / dataset_files.INDICES_FILE).read_bytes()
        dataset_id = new_id()
        final = storage.place_dataset(tmp_dir, dataset_id)
    finally:
        storage.remove(tmp_dir)
    with _row_or_nothing(session, storage, final):
        dataset = Dataset(
            id=dataset_id,
            name=name[:200],
            path=parent.path,
            files=[dataset_files.INDICES_FILE],
            n_particles=int(chosen.size),
            box_size=parent.box_size,
            pixel_size=parent.pixel_size,
            pixel_size_known=parent.pixel_size_known,
            mode=parent.mode,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            has_ctf=parent.has_ctf,
            parent_id=parent.id,
            base_id=parent.base_id or parent.id,
            source_job_id=job_id if classes is not None else None,
            source_round=source_round,
            source_classes=classes,
            import_root=parent.import_root,
            import_main=parent.import_main,
            import_files=parent.import_files,
        )
        session.add(dataset)
        session.commit()
    return dataset


@contextmanager
def _row_or_nothing(session: Session, storage: Storage | None = None, folder: Path | None = None):
    """Writing a new dataset's row: if anything fails, roll back and remove its folder, so that
    neither a folder without a row nor a half-written row is left behind."""
    try:
        yield
    except BaseException:
        session.rollback()
        if folder is not None:
            storage.remove(folder)
        raise
