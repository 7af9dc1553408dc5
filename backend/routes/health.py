"""Health: the database, the broker and the workers seen alive."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import select, text

from backend.deps import DispatcherDep, SessionDep, SettingsDep
from backend.schemas import Health
from cryoclust.core.tables import Worker, utcnow

router = APIRouter(tags=["health"])


def live_workers(session, settings) -> list[Worker]:
    """Workers whose last heartbeat is recent (three beats of slack)."""
    cutoff = utcnow() - timedelta(seconds=3 * settings.HEARTBEAT_SECONDS + 5)
    return list(session.scalars(select(Worker).where(Worker.seen_at >= cutoff).order_by(Worker.name)))


@router.get("/health", response_model=Health)
def health(session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep) -> Health:
    """Whether the database and the broker answer, and which workers are alive."""
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
        workers = [w.name for w in live_workers(session, settings)]
    except Exception as exc:  # report, do not fail: health must answer when things are down
        database = f"error: {type(exc).__name__}"
        workers = []
    broker = dispatcher.check()
    status = "ok" if database == "ok" and broker == "ok" else "degraded"
    return Health(status=status, database=database, broker=broker, workers=workers)
