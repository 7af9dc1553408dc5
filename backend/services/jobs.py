"""Jobs: create and dispatch, list, get, cancel, delete, and requeue those whose worker is gone."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.dispatch import Dispatcher
from backend.services.errors import Conflict, Invalid, NotFound, Unavailable
from backend.storage import StackCache, Storage
from cryoclust.core import jobstate
from cryoclust.core.db import Database
from cryoclust.core.settings import Settings
from cryoclust.core.tables import TERMINAL, Dataset, Job

log = logging.getLogger("cryoclust.api")


def get(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def create(session: Session, dispatcher: Dispatcher, dataset_id: str, params: dict) -> Job:
    """Add a queued job and send it to the workers; no row is left when the broker is down."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    if params["cluster_num"] > dataset.n_particles:
        raise Invalid(
            f"cluster_num {params['cluster_num']} is more than the {dataset.n_particles} particles of the dataset"
        )
    job = Job(dataset_id=dataset.id, params=params, round_num=params["round_num"], status="queued")
    session.add(job)
    session.flush()
    jobstate.status_event(session, job)
    session.commit()
    try:
        dispatcher.send(job.id)
    except Exception as exc:  # broker down: the job cannot run, say so and leave no stray row
        session.delete(job)
        session.commit()
        raise Unavailable(f"the job queue is unavailable: {type(exc).__name__}: {exc}") from None
    return job


def newest_first(session: Session, status: str | None, dataset_id: str | None, limit: int) -> list[Job]:
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    if dataset_id:
        query = query.where(Job.dataset_id == dataset_id)
    return list(session.scalars(query))


def cancel(session: Session, job_id: str) -> Job:
    job = get(session, job_id)
    jobstate.request_cancel(session, job)
    return job


def delete(session: Session, storage: Storage, stacks: StackCache, job_id: str) -> None:
    """Delete a finished job and its results."""
    job = get(session, job_id)
    if job.status not in TERMINAL:
        raise Conflict(f"job {job_id} is {job.status}; cancel it first")
    session.delete(job)
    session.commit()
    stacks.drop(storage.job_dir(job_id))
    storage.remove(storage.job_dir(job_id))


def dataset_of(session: Session, job: Job) -> Dataset:
    dataset = session.get(Dataset, job.dataset_id)
    if dataset is None:
        raise NotFound(f"the dataset of job {job.id} is gone")
    return dataset


def reap_stale(db: Database, settings: Settings, dispatcher: Dispatcher) -> list[str]:
    """Requeue the jobs whose worker is gone and send them again."""
    with db.session() as session:
        resend = jobstate.reap_stale(session, settings.STALE_AFTER_SECONDS, settings.MAX_ATTEMPTS)
    for job_id in resend:
        try:
            dispatcher.send(job_id)
            log.warning("job %s: worker lost, requeued", job_id)
        except Exception as exc:  # broker down: the next pass retries via the heartbeat
            log.error("job %s: cannot requeue: %s", job_id, exc)
    return resend
