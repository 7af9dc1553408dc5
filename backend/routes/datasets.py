"""Datasets: upload (streamed to disk, validated, renamed into place), list, get, delete,
particle thumbnails."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from backend import uploads
from backend.deps import SessionDep, StacksDep, StorageDep
from backend.schemas import DatasetOut
from backend.storage import (
    ReceivedFile,
    Storage,
    UploadError,
    combined_sha256,
    inspect_stack,
    main_input,
)
from cryoclust.core.tables import TERMINAL, Dataset, Job, new_id

router = APIRouter(tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one .mrcs/.mrc, or one .star plus the stacks it lists",
                        },
                        "name": {"type": "string", "maxLength": 200},
                    },
                }
            }
        },
    }
}


def add_dataset(session: Session, storage: Storage, tmp_dir, files: list[ReceivedFile], name: str | None) -> Dataset:
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


def get_dataset(session: Session, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise HTTPException(404, f"no dataset {dataset_id}")
    return dataset


@router.post("/datasets", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_BODY)
async def upload_dataset(request: Request, storage: StorageDep) -> Dataset:
    """Upload a particle stack (.mrcs/.mrc) or a .star with its stacks, as multipart 'files'."""
    settings = request.app.state.settings
    tmp_dir = storage.new_tmp_dir("upload-")
    try:
        received = await uploads.receive(request, tmp_dir, settings.MAX_UPLOAD_BYTES)

        def register() -> Dataset:
            with request.app.state.db.session() as session:
                return add_dataset(session, storage, tmp_dir, received.files, received.name)

        return await run_in_threadpool(register)
    finally:
        storage.remove(tmp_dir)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep) -> list[Dataset]:
    """All datasets, newest first."""
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at.desc())))


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, session: SessionDep) -> Dataset:
    """One dataset."""
    return get_dataset(session, dataset_id)


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, session: SessionDep, storage: StorageDep, stacks: StacksDep) -> Response:
    """Delete a dataset, its files, and its finished jobs with their results (409 while a job runs)."""
    dataset = get_dataset(session, dataset_id)
    jobs = list(session.scalars(select(Job).where(Job.dataset_id == dataset_id)))
    active = [job.id for job in jobs if job.status not in TERMINAL]
    if active:
        raise HTTPException(409, f"dataset {dataset_id} has unfinished jobs: {', '.join(active)}; cancel them first")
    for job in jobs:
        session.delete(job)
    session.delete(dataset)
    session.commit()
    stacks.drop(storage.dataset_dir(dataset_id))
    for job in jobs:
        storage.remove(storage.job_dir(job.id))
    storage.remove(storage.dataset_dir(dataset_id))
    return Response(status_code=204)


@router.get(
    "/datasets/{dataset_id}/particles/{index}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def particle_thumbnail(
    dataset_id: str,
    index: int,
    session: SessionDep,
    storage: StorageDep,
    stacks: StacksDep,
    size: int = Query(64, ge=16, le=512),
) -> Response:
    """One particle as a PNG thumbnail (index is 0-based)."""
    from worker.engine.gallery import thumbnail_png

    dataset = get_dataset(session, dataset_id)
    if not 0 <= index < dataset.n_particles:
        raise HTTPException(404, f"particle {index} is outside 0..{dataset.n_particles - 1}")
    path = storage.dataset_dir(dataset_id) / dataset.path
    try:
        image = stacks.read(path, lambda stack: stack.read(index, index + 1)[0])
    except (ValueError, OSError) as exc:
        raise HTTPException(422, f"cannot read particle {index}: {exc}") from None
    return Response(thumbnail_png(image, size), media_type="image/png", headers={"Cache-Control": "max-age=3600"})


__all__ = ["router", "add_dataset", "get_dataset", "UploadError"]
