"""Results as JSON for the page: loss history, complete rounds, embedding, classes, members."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Header, Query, Response

from backend import artifacts, embedding_binary
from backend.deps import SessionDep, StacksDep, StorageDep
from backend.schemas import ClassOut, EmbeddingOut, LossOut, MembersOut
from backend.services import events, jobs

router = APIRouter(tags=["results"])


@router.get("/jobs/{job_id}/loss", response_model=LossOut)
def job_loss(job_id: str, session: SessionDep, storage: StorageDep) -> dict:
    """Loss points of every round: complete rounds from their loss.json, the running one live."""
    job = jobs.get(session, job_id)
    out_dir = storage.job_dir(job.id)
    done = artifacts.rounds(out_dir)
    result = []
    for number in done:
        points = artifacts.read_json(artifacts.round_dir(out_dir, number) / "loss.json")
        result.append({"round": number, "points": points})
    live = events.live_loss(session, job.id, done)
    if live is not None:
        result.append(live)
    return {"rounds": result}


@router.get("/jobs/{job_id}/rounds", response_model=list[int])
def job_rounds(job_id: str, session: SessionDep, storage: StorageDep) -> list[int]:
    """Numbers of the complete rounds, 1-based (0 alone: the initial classes of a job of 0 rounds)."""
    job = jobs.get(session, job_id)
    return artifacts.rounds(storage.job_dir(job.id))


@router.get(
    "/jobs/{job_id}/rounds/{round_ref}/embedding",
    response_model=EmbeddingOut,
    responses={200: {"content": {embedding_binary.MEDIA_TYPE: {}}}},
)
def round_embedding(
    job_id: str,
    round_ref: str,
    session: SessionDep,
    storage: StorageDep,
    response: Response,
    fmt: Literal["json", "binary"] | None = Query(
        None,
        alias="format",
        description="binary: float32 x, y and uint16 classes (see the README); default JSON, "
        "or binary when Accept asks for application/octet-stream",
    ),
    view: Literal["pca", "umap"] = Query(
        "pca",
        description="pca: the 2-D PCA of the embedding (every round); umap: its UMAP layout (the "
        "last round of a job run with umap on; 404 otherwise). X-Embedding-Views lists the round's.",
    ),
    accept: str | None = Header(None),
):
    """The 2-D projection (PCA, or UMAP) of every particle's embedding, with its class (1-based)."""
    job = jobs.get(session, job_id)
    _, folder = artifacts.resolve_round(storage.job_dir(job.id), round_ref)
    xy = artifacts.embedding_2d(folder, view)
    classes = artifacts.labels(folder) + 1
    views = {"X-Embedding-Views": ",".join(artifacts.embedding_views(folder))}
    if embedding_binary.wants_binary(accept, fmt):
        headers = {
            "X-Embedding-Count": str(classes.size),
            "X-Embedding-Classes": str(int(classes.max(initial=0))),
            **views,
        }
        return Response(
            embedding_binary.pack(xy, classes), media_type=embedding_binary.MEDIA_TYPE, headers=headers
        )
    response.headers.update(views)
    points = np.round(np.asarray(xy, dtype=np.float64), 4)
    return {"x": points[:, 0].tolist(), "y": points[:, 1].tolist(), "labels": classes.tolist()}


@router.get("/jobs/{job_id}/rounds/{round_ref}/classes", response_model=list[ClassOut])
def round_classes(job_id: str, round_ref: str, session: SessionDep, storage: StorageDep) -> list[dict]:
    """Per class: its number (1-based), member count, fraction, and the FRC figure as a fraction
    of Nyquist; in Å (quality) only when the dataset's pixel size is known."""
    job = jobs.get(session, job_id)
    _, folder = artifacts.resolve_round(storage.job_dir(job.id), round_ref)
    known = jobs.dataset_of(session, job).pixel_size_known
    return artifacts.classes_with_nyquist(folder, known)


@router.get(
    "/jobs/{job_id}/rounds/{round_ref}/classes/{class_number}/average.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def class_average_png(
    job_id: str,
    round_ref: str,
    class_number: int,
    session: SessionDep,
    storage: StorageDep,
    stacks: StacksDep,
    size: int = Query(128, ge=16, le=512),
    model_size: bool = Query(
        False, description="the average at the model size even when a full-size one exists"
    ),
) -> Response:
    """One class average as a PNG: at the input's full box when the round has it, else at the
    model size."""
    from worker.engine.gallery import thumbnail_png

    job = jobs.get(session, job_id)
    _, folder = artifacts.resolve_round(storage.job_dir(job.id), round_ref)
    artifacts.check_classes(folder, [class_number])
    path = artifacts.averages_file(folder, model_size)
    image = stacks.read(path, lambda s: s.read(class_number - 1, class_number)[0])
    return Response(thumbnail_png(image, size), media_type="image/png")


@router.get("/jobs/{job_id}/rounds/{round_ref}/classes/{class_number}/members", response_model=MembersOut)
def class_members(
    job_id: str,
    round_ref: str,
    class_number: int,
    session: SessionDep,
    storage: StorageDep,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=10000),
) -> dict:
    """Indices (0-based) of the particles in one class, a page at a time."""
    job = jobs.get(session, job_id)
    _, folder = artifacts.resolve_round(storage.job_dir(job.id), round_ref)
    artifacts.check_classes(folder, [class_number])
    members = np.flatnonzero(artifacts.labels(folder) == class_number - 1)
    return {"total": int(members.size), "indices": members[offset : offset + limit].tolist()}
