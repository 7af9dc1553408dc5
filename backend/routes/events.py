"""Live events of a job as Server-Sent Events, resumable with Last-Event-ID.

Every row of job_events is one SSE event whose `id:` is the row's integer id, so a client that
reconnects with Last-Event-ID (the browser does it by itself) gets exactly the events it missed.
The stream ends after the `end` event, which the job's last state change writes.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.deps import DatabaseDep
from backend.services import events
from cryoclust.core.db import Database
from cryoclust.core.tables import TERMINAL

router = APIRouter(tags=["events"])

POLL_SECONDS = 0.3
KEEPALIVE_SECONDS = 15.0
MAX_ID = 2**62


def format_event(event_id: int, kind: str, data: dict) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(request: Request, db: Database, job_id: str, after: int):
    yield "retry: 2000\n\n"
    last_sent = time.monotonic()
    quiet_polls_after_end = 0
    while True:
        rows, status = await run_in_threadpool(events.after, db, job_id, after)
        for event_id, kind, data in rows:
            after = event_id
            yield format_event(event_id, kind, data)
            last_sent = time.monotonic()
            if kind == "end":
                return
        if status is None:
            yield format_event(after, "end", {"status": "deleted"})
            return
        if not rows and status in TERMINAL:
            # Ended without an `end` row (written by an older version or lost): close anyway.
            quiet_polls_after_end += 1
            if quiet_polls_after_end > 3:
                yield format_event(after, "end", {"status": status})
                return
        if await request.is_disconnected():
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if len(rows) < events.BATCH:
            await asyncio.sleep(POLL_SECONDS)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: str,
    request: Request,
    db: DatabaseDep,
    last_event_id: int | None = Query(None, ge=0, le=MAX_ID, description="resume after this event id"),
    last_event_id_header: str | None = Header(None, alias="Last-Event-ID"),
) -> StreamingResponse:
    """Server-Sent Events: status, stage, round_started, loss, epoch, round, then end."""
    after = last_event_id or 0
    if last_event_id_header:
        try:
            after = max(after, min(int(last_event_id_header), MAX_ID))
        except ValueError:
            raise HTTPException(422, "Last-Event-ID must be an integer") from None
    if await run_in_threadpool(events.job_status, db, job_id) is None:
        raise HTTPException(404, f"no job {job_id}")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        stream(request, db, job_id, after), media_type="text/event-stream", headers=headers
    )
