"""The FastAPI application: REST API under /api, the page at / and /static, Plotly.js at /vendor.

uvicorn --factory backend.app:create_app
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backend.auth import require_token
from backend.dispatch import Dispatcher
from backend.errors import validation_error
from backend.resumable import UploadStore
from backend.routes import (
    datasets,
    downloads,
    events,
    health,
    jobs,
    page,
    parameters,
    results,
    session,
    uploads,
)
from backend.routes.page import NoCacheStaticFiles
from backend.services import jobs as jobs_service
from backend.services.errors import ServiceError
from backend.storage import StackCache, Storage, UploadError
from cryoclust.core.db import Database
from cryoclust.core.settings import Settings
from worker.engine.errors import InputError
from worker.engine.version import __version__

log = logging.getLogger("cryoclust.api")
UPLOAD_SWEEP_SECONDS = 3600  # abandoned resumable uploads are looked for at start and hourly


def reap_once(app: FastAPI) -> list[str]:
    """Requeue the jobs whose worker is gone and send them again."""
    return jobs_service.reap_stale(app.state.db, app.state.settings, app.state.dispatcher)


def remove_abandoned_uploads(app: FastAPI) -> list[str]:
    return app.state.uploads.remove_abandoned(app.state.settings.UPLOAD_KEEP_DAYS * 86400)


async def _reaper(app: FastAPI) -> None:
    interval = max(0.5, min(30.0, app.state.settings.STALE_AFTER_SECONDS / 4))
    last_sweep = -float("inf")
    while True:
        if time.monotonic() - last_sweep > UPLOAD_SWEEP_SECONDS:
            last_sweep = time.monotonic()
            try:
                await run_in_threadpool(remove_abandoned_uploads, app)
            except Exception:
                log.exception("removing abandoned uploads")
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(reap_once, app)
        except Exception:
            log.exception("stale-job reaper")


@asynccontextmanager
async def lifespan(app: FastAPI):
    task = asyncio.create_task(_reaper(app))
    try:
        yield
    finally:
        task.cancel()
        # A reap under way in a worker thread ends (cancellation waits for the thread) before
        # the database goes: else its connection outlives the pool and is closed by no one.
        with suppress(asyncio.CancelledError):
            await task
        app.state.stacks.clear()
        app.state.dispatcher.close()
        app.state.db.dispose()


async def _error_answer(_request: Request, exc: UploadError | ServiceError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _input_error(_request: Request, exc: InputError) -> JSONResponse:
    # A dataset's files no longer read as they did (an imported file changed or vanished, a damaged
    # upload): the request was fine, the files on the server are what conflicts.
    return JSONResponse({"detail": str(exc)}, status_code=409)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="cryoclust",
        version=__version__,
        description="2D classification of cryo-EM particle images: datasets, jobs, live events, results.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = Database.from_settings(settings)
    app.state.storage = Storage(settings.data_dir)
    app.state.dispatcher = Dispatcher(settings)
    app.state.stacks = StackCache()
    app.state.uploads = UploadStore(settings.data_dir, settings.MAX_UPLOAD_BYTES)
    app.add_exception_handler(UploadError, _error_answer)
    app.add_exception_handler(ServiceError, _error_answer)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "HEAD", "PATCH"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Last-Event-ID",
                "Tus-Resumable",
                "Upload-Length",
                "Upload-Offset",
                "Upload-Metadata",
            ],
            expose_headers=["Location", "Tus-Resumable", "Upload-Offset", "Upload-Length"],
        )
    protected = [Depends(require_token)]
    for module in (health, parameters, datasets, uploads, jobs, events, results, downloads):
        app.include_router(module.router, prefix="/api", dependencies=protected)
    app.include_router(session.router, prefix="/api")  # signs in with the token in its body
    app.include_router(page.router)
    # check_dir=False: a missing frontend/ gives 404s, not an API that cannot start.
    app.mount("/static", NoCacheStaticFiles(directory=settings.FRONTEND_DIR, check_dir=False), name="static")
    return app
