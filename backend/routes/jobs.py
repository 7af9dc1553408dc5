"""Jobs: create (queued for a worker), list, get, cancel, delete."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from backend.deps import DispatcherDep, SessionDep, StacksDep, StorageDep
from backend.schemas import JobCreate, JobOut, JobStatus
from backend.services import jobs as service
from cryoclust.core.tables import Job

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=201, response_model=JobOut)
def create_job(body: JobCreate, session: SessionDep, dispatcher: DispatcherDep) -> Job:
    """Queue a classification of a dataset with the algorithm's parameters (GET /api/parameters)."""
    return service.create(session, dispatcher, body.dataset_id, body.model_dump(exclude={"dataset_id"}))


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    dataset_id: str | None = Query(None, max_length=32),
    limit: int = Query(500, ge=1, le=5000),
) -> list[Job]:
    """Jobs, newest first, optionally of one status or one dataset."""
    return service.newest_first(session, status, dataset_id, limit)


@router.get("/jobs/{job_id}", response_model=JobOut)
def read_job(job_id: str, session: SessionDep) -> Job:
    """One job: status, round, progress, timings, worker, device, parameters asked and used, error."""
    return service.get(session, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep) -> Job:
    """Cancel a job: at once when queued, within seconds of its next batch when running."""
    return service.cancel(session, job_id)


@router.delete("/jobs/{job_id}", status_code=204)
def delete_job(job_id: str, session: SessionDep, storage: StorageDep, stacks: StacksDep) -> Response:
    """Delete a finished job and its results (409 while it is queued or running)."""
    service.delete(session, storage, stacks, job_id)
    return Response(status_code=204)
