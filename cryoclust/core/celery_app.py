"""The Celery application: the broker from the settings, one job at a time per worker.

    celery -A cryoclust.core.celery_app worker -Q cryoclust --pool solo   # what `cryoclust worker` runs

Redis by CRYOCLUST_BROKER_URL; with none set, Celery's filesystem transport under
DATA_DIR/broker (one machine, no Redis). Tasks are acknowledged only when they end (acks_late)
and a worker reserves one at a time, so a worker that dies gives its job back; the API's
stale-job reaper requeues jobs whose worker stopped writing heartbeats (the filesystem transport
cannot redeliver, and Redis only after the visibility timeout, which must outlast any job).
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery

from cryoclust.core.settings import Settings

TASK_CLASSIFY = "classify"
FILESYSTEM_TRANSPORT = "cryoclust.core.fs_transport:Transport"


def broker_options(settings: Settings) -> dict:
    if settings.uses_filesystem_broker:
        queue_dir = settings.broker_dir / "queue"
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "processed_folder": str(settings.broker_dir / "processed"),
            # kombu keeps its exchange table in ./control unless told otherwise
            "control_folder": str(settings.broker_dir / "control"),
            "store_processed": False,
            "polling_interval": 0.5,
        }
    return {"visibility_timeout": settings.VISIBILITY_TIMEOUT_SECONDS}


def ensure_broker_dirs(settings: Settings) -> None:
    """The filesystem transport needs its folders before the first message."""
    if settings.uses_filesystem_broker:
        options = broker_options(settings)
        for key in ("data_folder_in", "processed_folder", "control_folder"):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    app = Celery("cryoclust", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_default_queue=settings.QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        # The filesystem transport has no broadcast; the workers table reports live workers.
        worker_enable_remote_control=not settings.uses_filesystem_broker,
        worker_send_task_events=False,
        broker_transport_options=broker_options(settings),
        # the filesystem transport, stopping within half a second (fs_transport.py)
        broker_transport=FILESYSTEM_TRANSPORT if settings.uses_filesystem_broker else None,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    )
    app.conf.cryoclust_settings = settings
    return app


_default: Celery | None = None


def __getattr__(name: str) -> Celery:
    # `celery -A cryoclust.core.celery_app` looks up `app`; made on first use, not at import.
    global _default
    if name in ("app", "celery"):
        if _default is None:
            _default = make_celery()
        return _default
    raise AttributeError(name)
