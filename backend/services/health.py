"""Health: whether the database answers, and the workers seen alive."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cryoclust.core.settings import Settings
from cryoclust.core.tables import Worker, utcnow


def database_and_workers(session: Session, settings: Settings) -> tuple[str, list[str]]:
    """('ok', names of live workers), or the database's error in a few words and no workers."""
    try:
        session.execute(text("SELECT 1"))
        # Alive: a heartbeat within three beats (and some slack).
        cutoff = utcnow() - timedelta(seconds=3 * settings.HEARTBEAT_SECONDS + 5)
        workers = session.scalars(select(Worker.name).where(Worker.seen_at >= cutoff).order_by(Worker.name))
        return "ok", list(workers)
    except Exception as exc:  # report, do not fail: health must answer when things are down
        return f"error: {type(exc).__name__}", []
