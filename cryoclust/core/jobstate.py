"""Changes of a job's state, each written together with the event that announces it.

The API (create, cancel, the stale-job reaper) and the workers (start, progress, finish) both use
these, so the page sees every change in the same event stream. No web imports here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cryoclust.core.tables import TERMINAL, Job, JobEvent, utcnow


def add_event(session: Session, job_id: str, kind: str, data: dict) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, data=data))


def status_event(session: Session, job: Job, message: str | None = None) -> None:
    data: dict = {"status": job.status}
    if job.error:
        data["error"] = job.error
    if message:
        data["message"] = message
    add_event(session, job.id, "status", data)


def finish(
    session: Session, job: Job, status: str, error: str | None = None, message: str | None = None
) -> None:
    """Move a job to a terminal status; its event stream ends here. The caller commits.

    `message` says more in the final status event (e.g. why the rounds stopped early)."""
    assert status in TERMINAL
    job.status = status
    job.error = error
    job.finished_at = utcnow()
    job.heartbeat_at = None
    if status == "succeeded":
        job.progress = 1.0
    status_event(session, job, message)
    add_event(session, job.id, "end", {"status": status})


def request_cancel(session: Session, job: Job) -> None:
    """A queued job is cancelled at once; a running one when its worker next reports."""
    if job.status in TERMINAL:
        return
    job.cancel_requested = True
    if job.status == "queued":
        finish(session, job, "cancelled")
    session.commit()


def claim(session: Session, job_id: str, worker: str, default_device: str, stale_after: float) -> Job | None:
    """Mark a job running on this worker; None when it needs no run here.

    None when the job ended, was cancelled or deleted, or runs on another worker that is still
    alive (Redis redelivers a task after its visibility timeout even if its job still runs).
    """
    locking = session.bind.dialect.name != "sqlite"
    job = session.get(Job, job_id, with_for_update=locking)
    if job is None or job.status in TERMINAL:
        return None
    if job.cancel_requested:
        finish(session, job, "cancelled")
        session.commit()
        return None
    fresh = job.heartbeat_at and job.heartbeat_at > utcnow() - timedelta(seconds=stale_after)
    if job.status == "running" and job.worker != worker and fresh:
        session.rollback()
        return None
    job.status = "running"
    job.worker = worker
    job.device = job.params.get("device") or default_device
    job.attempts += 1
    job.error = None
    job.started_at = job.started_at or utcnow()
    job.heartbeat_at = utcnow()
    message = f"attempt {job.attempts} on {worker}" if job.attempts > 1 else None
    status_event(session, job, message)
    session.commit()
    return job


def requeue(session: Session, job: Job, reason: str, graceful: bool = False) -> None:
    """Give a running job back to the queue (its worker stopped or was lost). Caller commits.

    A graceful stop (the worker was asked to stop) does not count as a lost attempt.
    """
    if graceful:
        job.attempts = max(0, job.attempts - 1)
    job.status = "queued"
    job.heartbeat_at = None
    job.worker = None
    status_event(session, job, reason)


def reap_stale(session: Session, stale_after: float, max_attempts: int) -> list[str]:
    """Requeue running jobs whose worker stopped writing heartbeats; returns the ids to resend.

    The conditional UPDATE makes this safe when several API processes reap at once: only the
    one whose update matched a row resends the task.
    """
    cutoff: datetime = utcnow() - timedelta(seconds=stale_after)
    candidates = session.scalars(
        select(Job.id).where(Job.status == "running", Job.heartbeat_at < cutoff)
    ).all()
    resend = []
    for job_id in candidates:
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.heartbeat_at < cutoff)
            .values(heartbeat_at=utcnow())
        ).rowcount
        session.commit()
        if not won:
            continue
        job = session.get(Job, job_id, populate_existing=True)
        if job.cancel_requested:
            finish(session, job, "cancelled")
        elif job.attempts >= max_attempts:
            finish(session, job, "failed", f"worker lost {job.attempts} times (last: {job.worker})")
        else:
            requeue(session, job, f"worker {job.worker} lost; requeued")
            resend.append(job_id)
        session.commit()
    return resend
