"""The job parameters as the engine defines them, for the page's form and other clients."""

from __future__ import annotations

from fastapi import APIRouter

from backend.schemas import ParameterOut
from worker.engine.config import PARAMETERS

router = APIRouter(tags=["jobs"])


@router.get("/parameters", response_model=list[ParameterOut])
def job_parameters() -> list[dict]:
    """Every job parameter: type, default, range or choices, help, and what auto (null) means."""
    return [p.to_json() for p in PARAMETERS]
