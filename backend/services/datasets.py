"""Datasets: register an upload, list, get, delete (with the finished jobs that used it)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.services.errors import Conflict, Invalid, NotFound
from backend.storage import ReceivedFile, StackCache, Storage, combined_sha256, inspect_stack, main_input
from cryoclust.core.tables import TERMINAL, Dataset, Job, new_id


def add(session: Session, storage: Storage, tmp_dir: Path, files: list[ReceivedFile], name: str | None) -> Dataset:
    """Validate the files in `tmp_dir`, move them to their dataset folder and add the row.

    Leaves nothing behind when anything fails: the caller removes `tmp_dir`, this removes the
    final folder if the row cannot be written.
    """
    main = main_input(files)
    info = inspect_stack(main.path, tmp_dir, [f.name for f in files])
    dataset_id = new_id()
    final = storage.place_dataset(tmp_dir, dataset_id)
    try:
        dataset = Dataset(
            id=dataset_id,
            name=(name or main.name)[:200],
            path=main.name,
            files=info.files,
            n_particles=info.n_particles,
            box_size=info.box_size,
            pixel_size=info.pixel_size,
            mode=info.mode,
            size_bytes=sum(f.size for f in files),
            sha256=combined_sha256(files),
            has_ctf=info.has_ctf,
        )
        session.add(dataset)
        session.commit()
        return dataset
    except BaseException:
        session.rollback()
        storage.remove(final)
        raise


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
    jobs = list(session.scalars(select(Job).where(Job.dataset_id == dataset_id)))
    active = [job.id for job in jobs if job.status not in TERMINAL]
    if active:
        raise Conflict(f"dataset {dataset_id} has unfinished jobs: {', '.join(active)}; cancel them first")
    for job in jobs:
        session.delete(job)
    session.delete(dataset)
    session.commit()
    stacks.drop(storage.dataset_dir(dataset_id))
    for job in jobs:
        storage.remove(storage.job_dir(job.id))
    storage.remove(storage.dataset_dir(dataset_id))


def particle(session: Session, storage: Storage, stacks: StackCache, dataset_id: str, index: int):
    """One particle image (index 0-based), read through the cache of open stacks."""
    dataset = get(session, dataset_id)
    if not 0 <= index < dataset.n_particles:
        raise NotFound(f"particle {index} is outside 0..{dataset.n_particles - 1}")
    path = storage.dataset_dir(dataset_id) / dataset.path
    try:
        return stacks.read(path, lambda stack: stack.read(index, index + 1)[0])
    except (ValueError, OSError) as exc:
        raise Invalid(f"cannot read particle {index}: {exc}") from None
