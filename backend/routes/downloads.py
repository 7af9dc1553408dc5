"""Downloads: a round's files, a zip of a round, the final RELION star, subset exports."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from backend import artifacts
from backend.deps import SessionDep, StorageDep
from backend.schemas import SubsetRequest
from backend.services import jobs
from backend.storage import Storage
from cryoclust.core import datasets
from cryoclust.core.tables import Dataset

router = APIRouter(tags=["downloads"])

ROUND_FILES = {
    "class_averages_full.mrcs": "application/octet-stream",  # the last round's, at the input box
    "class_averages.mrcs": "application/octet-stream",  # the full-size ones when the round has them
    "class_averages.png": "image/png",
    "labels.csv": "text/csv",
}
# Weights are resume state, large and of no use outside the engine.
ARCHIVE_EXCLUDES = {"model.pt", "checkpoint.pt"}
SUBSET_CHUNK = 1024


def _temporary_download(path: Path, filename: str, media_type: str) -> FileResponse:
    """Serve a file made for this request and remove it once sent."""
    return FileResponse(
        path,
        media_type=media_type,
        filename=filename,
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


def _zip_round(folder: Path, target: Path, prefix: str) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name not in ARCHIVE_EXCLUDES and not path.name.startswith("."):
                archive.write(path, f"{prefix}/{path.name}")


@router.get(
    "/jobs/{job_id}/rounds/{round_ref}/archive.zip",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
async def round_archive(
    job_id: str, round_ref: str, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """Every file of a round in one zip."""
    job = jobs.get(session, job_id)
    number, folder = artifacts.resolve_round(storage.job_dir(job.id), round_ref)
    target = storage.tmp_file(".zip")
    name = f"{job.id}_round{number:02d}"
    await run_in_threadpool(_zip_round, folder, target, name)
    return _temporary_download(target, f"{name}.zip", "application/zip")


@router.get(
    "/jobs/{job_id}/rounds/{round_ref}/{filename}",
    response_class=FileResponse,
    responses={200: {"content": {t: {} for t in set(ROUND_FILES.values())}}},
)
def round_file(  # after archive.zip: {filename} would shadow it
    job_id: str,
    round_ref: str,
    filename: Literal["class_averages_full.mrcs", "class_averages.mrcs", "class_averages.png", "labels.csv"],
    session: SessionDep,
    storage: StorageDep,
    model_size: bool = Query(
        False, description="class_averages.mrcs at the model size even when full-size ones exist"
    ),
) -> FileResponse:
    """Class averages or labels CSV of a round (`final` = last complete). class_averages.mrcs:
    at the input's box and pixel size when the round has them (the last round of a finished job;
    the file name says `_full`), else, or with ?model_size=true, at the model size;
    class_averages_full.mrcs: only the full-size ones; class_averages.png: the PNG gallery."""
    job = jobs.get(session, job_id)
    number, folder = artifacts.resolve_round(storage.job_dir(job.id), round_ref)
    path = (
        artifacts.averages_file(folder, model_size)
        if filename == "class_averages.mrcs"
        else folder / filename
    )
    if not path.is_file():
        raise HTTPException(404, f"{filename} is missing from round {number}")
    stem, suffix = path.name.rsplit(".", 1)
    return FileResponse(
        path, media_type=ROUND_FILES[filename], filename=f"{job.id}_round{number:02d}_{stem}.{suffix}"
    )


@router.get(
    "/jobs/{job_id}/particles.star",
    response_class=FileResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
def particles_star(job_id: str, session: SessionDep, storage: StorageDep) -> FileResponse:
    """RELION particles .star with _rlnClassNumber of the final round (once the job succeeded)."""
    job = jobs.get(session, job_id)
    path = storage.job_dir(job.id) / "particles.star"
    if not path.is_file():
        raise HTTPException(404, f"job {job.id} has no final particles.star yet (status {job.status})")
    return FileResponse(path, media_type="text/plain", filename=f"{job.id}_particles.star")


def _write_particles_cs(
    storage: Storage, dataset: Dataset, labels: np.ndarray, chosen: np.ndarray | None, target: Path
) -> None:
    """The dataset's particles (the `chosen` ones) with their 1-based classes as a cryoSPARC .cs."""
    from worker.engine.io.cryosparc import write_stack_cs

    with datasets.open_stack(storage.root, dataset) as stack:
        if chosen is not None:
            stack, labels = stack.subset(chosen), labels[chosen]
        write_stack_cs(target, stack, stack.image_names, datasets.uid_key(dataset), labels)


@router.get(
    "/jobs/{job_id}/particles.cs",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def particles_cs(job_id: str, session: SessionDep, storage: StorageDep) -> FileResponse:
    """cryoSPARC particles .cs of the final round: each particle's uid (its own from a .cs upload,
    else a stable one from the dataset and its index), blob path and alignments2D/class."""
    job = jobs.get(session, job_id)
    if not (storage.job_dir(job.id) / "particles.star").is_file():
        raise HTTPException(404, f"job {job.id} has no final particles yet (status {job.status})")
    _, folder = artifacts.resolve_round(storage.job_dir(job.id), "final")
    dataset = jobs.dataset_of(session, job)
    target = storage.tmp_file(".cs")
    try:
        await run_in_threadpool(
            _write_particles_cs, storage, dataset, artifacts.labels(folder) + 1, None, target
        )
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return _temporary_download(target, f"{job.id}_particles.cs", "application/octet-stream")


def _write_subset(
    storage: Storage, dataset: Dataset, folder: Path, classes: list[int], fmt: str, target: Path
) -> int:
    labels = artifacts.labels(folder) + 1
    chosen = np.flatnonzero(np.isin(labels, classes))
    if chosen.size == 0:
        raise HTTPException(422, f"classes {classes} have no members")
    if fmt == "cs":
        _write_particles_cs(storage, dataset, labels, chosen, target)
        return int(chosen.size)
    with datasets.open_stack(storage.root, dataset) as stack:
        if fmt == "star":
            from worker.engine.io.star import write_particles_star

            names = stack.image_names
            write_particles_star(
                target, [names[i] for i in chosen], labels[chosen], pixel_size=stack.pixel_size
            )
        else:
            from worker.engine.io.mrc import write_stack

            images = np.empty((chosen.size, stack.box, stack.box), dtype=np.float32)
            for start in range(0, chosen.size, SUBSET_CHUNK):
                images[start : start + SUBSET_CHUNK] = stack.read_indices(
                    chosen[start : start + SUBSET_CHUNK]
                )
            write_stack(target, images, stack.pixel_size)
    return int(chosen.size)


@router.post(
    "/jobs/{job_id}/subset",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}, "text/plain": {}}}},
)
async def subset(job_id: str, body: SubsetRequest, session: SessionDep, storage: StorageDep) -> FileResponse:
    """The particles of chosen classes: a .star or cryoSPARC .cs referencing the original stacks,
    or a new .mrcs."""
    job = jobs.get(session, job_id)
    number, folder = artifacts.resolve_round(storage.job_dir(job.id), body.round)
    artifacts.check_classes(folder, body.classes)
    dataset = jobs.dataset_of(session, job)
    classes = sorted(set(body.classes))
    target = storage.tmp_file(f".{body.format}")
    try:
        await run_in_threadpool(_write_subset, storage, dataset, folder, classes, body.format, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    label = "-".join(str(c) for c in classes[:20])
    filename = f"{job.id}_round{number:02d}_classes{label}.{body.format}"
    media = "text/plain" if body.format == "star" else "application/octet-stream"
    return _temporary_download(target, filename, media)
