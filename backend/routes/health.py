"""Health: the database, the broker and the workers seen alive."""

from __future__ import annotations

from fastapi import APIRouter

from backend.deps import DispatcherDep, SessionDep, SettingsDep
from backend.schemas import Health
from backend.services import health as service

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep) -> Health:
    """Whether the database and the broker answer, and which workers are alive."""
    database, workers = service.database_and_workers(session, settings)
    broker = dispatcher.check()
    status = "ok" if database == "ok" and broker == "ok" else "degraded"
    return Health(status=status, database=database, broker=broker, workers=workers)
