"""Datasets: upload (streamed to disk, validated, renamed into place), import by server path,
list, get, delete, particle thumbnails."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from backend import uploads
from backend.deps import DatabaseDep, SessionDep, SettingsDep, StacksDep, StorageDep
from backend.schemas import DatasetImport, DatasetOut, SubsetDatasetCreate
from backend.services import datasets as service
from cryoclust.core.tables import Dataset

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
                            "description": "one .mrcs/.mrc, or one .star or cryoSPARC .cs plus the stacks it lists",
                        },
                        "name": {"type": "string", "maxLength": 200},
                    },
                }
            }
        },
    }
}


@router.post("/datasets", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_BODY)
async def upload_dataset(
    request: Request,
    storage: StorageDep,
    settings: SettingsDep,
    db: DatabaseDep,
    pixel_size: float | None = Query(
        None, gt=0, le=1000, description="Å per pixel, when the files do not say it (or say it wrong)"
    ),
) -> Dataset:
    """Upload a particle stack (.mrcs/.mrc), or a .star or cryoSPARC .cs with its stacks, as multipart 'files'."""
    tmp_dir = storage.new_tmp_dir("upload-")
    try:
        received = await uploads.receive(request, tmp_dir, settings.MAX_UPLOAD_BYTES)

        def register() -> Dataset:
            with db.session() as session:
                return service.add(session, storage, tmp_dir, received.files, received.name, pixel_size)

        return await run_in_threadpool(register)
    finally:
        storage.remove(tmp_dir)


@router.post("/datasets/import", status_code=201, response_model=DatasetOut)
def import_dataset(body: DatasetImport, session: SessionDep, settings: SettingsDep) -> Dataset:
    """Register a stack (.mrcs/.mrc), or a .star or cryoSPARC .cs with its stacks, that already lies on the
    server under one of CRYOCLUST_IMPORT_ROOTS. Nothing is copied; a job fails if the files change later."""
    return service.import_path(session, settings.IMPORT_ROOTS, body.path, body.name, body.pixel_size)


@router.post("/datasets/{dataset_id}/subsets", status_code=201, response_model=DatasetOut)
def create_subset(
    dataset_id: str, body: SubsetDatasetCreate, session: SessionDep, storage: StorageDep
) -> Dataset:
    """A derived dataset of some of this one's particles (by index, no copy): those a job's round
    put in chosen classes, or explicit 0-based indices. Jobs on it read exactly those particles."""
    return service.derive(
        session,
        storage,
        dataset_id,
        job_id=body.job_id,
        round_ref=body.round,
        classes=body.classes,
        indices=body.indices,
        name=body.name,
    )


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep) -> list[Dataset]:
    """All datasets, newest first."""
    return service.newest_first(session)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, session: SessionDep) -> Dataset:
    """One dataset."""
    return service.get(session, dataset_id)


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, session: SessionDep, storage: StorageDep, stacks: StacksDep) -> Response:
    """Delete a dataset, its files, and its finished jobs with their results (409 while a job runs)."""
    service.delete(session, storage, stacks, dataset_id)
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

    image = service.particle(session, storage, stacks, dataset_id, index)
    return Response(
        thumbnail_png(image, size), media_type="image/png", headers={"Cache-Control": "max-age=3600"}
    )
