"""Events of a job, read in batches for the live stream."""

from __future__ import annotations

from sqlalchemy import select

from cryoclust.core.db import Database
from cryoclust.core.tables import Job, JobEvent

BATCH = 500


def after(db: Database, job_id: str, last_id: int) -> tuple[list[tuple[int, str, dict]], str | None]:
    """Up to BATCH events after id `last_id`, and the job's status (None once it is deleted)."""
    with db.session() as session:
        rows = session.execute(
            select(JobEvent.id, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.id > last_id)
            .order_by(JobEvent.id)
            .limit(BATCH)
        ).all()
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    return [tuple(row) for row in rows], status


def job_status(db: Database, job_id: str) -> str | None:
    with db.session() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def live_loss(session, job_id: str, done: list[int]) -> dict | None:
    """The loss points of the round in progress (after its latest start), unless it is done."""
    started = session.execute(
        select(JobEvent.id, JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.kind == "round_started")
        .order_by(JobEvent.id.desc())
        .limit(1)
    ).first()
    if not started or started.data.get("round") in done:
        return None
    live = session.scalars(
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.kind == "loss", JobEvent.id > started.id)
        .order_by(JobEvent.id)
    ).all()
    points = [{k: p[k] for k in ("step", "pairs_done", "epoch", "loss")} for p in live]
    return {"round": started.data["round"], "points": points}
