"""Jobs: create (queued for a worker), list, get, cancel, delete."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cryoclust.core import jobstate
from backend.deps import DispatcherDep, SessionDep, StacksDep, StorageDep
from backend.schemas import JobCreate, JobOut, JobStatus
from cryoclust.core.tables import TERMINAL, Dataset, Job

router = APIRouter(tags=["jobs"])


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


@router.post("/jobs", status_code=201, response_model=JobOut)
def create_job(body: JobCreate, session: SessionDep, dispatcher: DispatcherDep) -> Job:
    """Queue a classification of a dataset with the algorithm's parameters."""
    dataset = session.get(Dataset, body.dataset_id)
    if dataset is None:
        raise HTTPException(404, f"no dataset {body.dataset_id}")
    if body.cluster_num > dataset.n_particles:
        raise HTTPException(
            422, f"cluster_num {body.cluster_num} is more than the {dataset.n_particles} particles of the dataset"
        )
    params = body.model_dump(exclude={"dataset_id"})
    job = Job(dataset_id=dataset.id, params=params, round_num=body.round_num, status="queued")
    session.add(job)
    session.flush()
    jobstate.status_event(session, job)
    session.commit()
    try:
        dispatcher.send(job.id)
    except Exception as exc:  # broker down: the job cannot run, say so and leave no stray row
        session.delete(job)
        session.commit()
        raise HTTPException(503, f"the job queue is unavailable: {type(exc).__name__}: {exc}") from None
    return job


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    dataset_id: str | None = Query(None, max_length=32),
    limit: int = Query(500, ge=1, le=5000),
) -> list[Job]:
    """Jobs, newest first, optionally of one status or one dataset."""
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    if dataset_id:
        query = query.where(Job.dataset_id == dataset_id)
    return list(session.scalars(query))


@router.get("/jobs/{job_id}", response_model=JobOut)
def read_job(job_id: str, session: SessionDep) -> Job:
    """One job: status, round, progress, timings, worker, device, error."""
    return get_job(session, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep) -> Job:
    """Cancel a job: at once when queued, within seconds of its next batch when running."""
    job = get_job(session, job_id)
    jobstate.request_cancel(session, job)
    return job


@router.delete("/jobs/{job_id}", status_code=204)
def delete_job(job_id: str, session: SessionDep, storage: StorageDep, stacks: StacksDep) -> Response:
    """Delete a finished job and its results (409 while it is queued or running)."""
    job = get_job(session, job_id)
    if job.status not in TERMINAL:
        raise HTTPException(409, f"job {job_id} is {job.status}; cancel it first")
    session.delete(job)
    session.commit()
    stacks.drop(storage.job_dir(job_id))
    storage.remove(storage.job_dir(job_id))
    return Response(status_code=204)
