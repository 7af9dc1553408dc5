"""Settings of one test: its own DATA_DIR and queue, CPU, no token, fast heartbeats."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from cryoclust.core.settings import Settings
from support.databases import TAG


def make_settings(data_dir: Path, **overrides) -> Settings:
    values = dict(
        DATA_DIR=data_dir,
        DATABASE_URL="",
        BROKER_URL="",
        QUEUE=f"test-{TAG}-{uuid.uuid4().hex[:6]}",
        API_TOKEN="",
        DEVICE="cpu",
        CORS_ORIGINS="",
        HEARTBEAT_SECONDS=1.0,
        STALE_AFTER_SECONDS=60.0,
    )
    values.update(overrides)
    return Settings(**values)


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process (worker, serve) running with `settings`.

    One torch thread: the test machine's two cores are shared by parallel test runs.
    """
    return {
        **os.environ,
        **settings.env(),
        "CRYOCLUST_API_TOKEN": settings.API_TOKEN,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        **extra,
    }
