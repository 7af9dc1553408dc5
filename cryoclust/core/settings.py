"""Settings of the service, read once from CRYOCLUST_* environment variables.

With nothing set, everything lives under ./data: a SQLite database (WAL) and Celery's filesystem
broker, so one machine needs no Redis and no PostgreSQL. Several machines share a PostgreSQL
URL, a Redis URL and a DATA_DIR on a shared filesystem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.engine.config import DEFAULT_DEVICE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRYOCLUST_", extra="ignore")

    DATA_DIR: Path = Path("data")
    # Empty: SQLite at DATA_DIR/cryoclust.db.
    DATABASE_URL: str = ""
    # Empty: Celery's filesystem transport under DATA_DIR/broker (one machine only).
    BROKER_URL: str = ""
    # Queue the API sends jobs to and the workers consume.
    QUEUE: str = "cryoclust"
    MAX_UPLOAD_BYTES: int = 50 * 1024**3
    # A resumable upload that receives no byte for this long is deleted.
    UPLOAD_KEEP_DAYS: float = 7.0
    # Empty: no token asked (the server then binds to loopback by default).
    API_TOKEN: str = ""
    # Device of a worker that no job asks otherwise; cuda falls back to cpu in the engine.
    DEVICE: str = DEFAULT_DEVICE
    HOST: str = "127.0.0.1"
    PORT: int = 8000
    # Comma-separated origins allowed by CORS; empty keeps CORS closed.
    CORS_ORIGINS: str = ""
    # A running job whose worker has not written a heartbeat for this long is requeued.
    HEARTBEAT_SECONDS: float = 10.0
    STALE_AFTER_SECONDS: float = 120.0
    # A job that loses its worker this many times fails instead of being requeued again.
    MAX_ATTEMPTS: int = 3
    # Redis redelivers an unacknowledged task after this long: longer than the longest job.
    VISIBILITY_TIMEOUT_SECONDS: int = 7 * 24 * 3600
    # Folders on this server whose files may be imported by path (registered, not copied).
    # Empty: import by path is off. In the environment: paths separated by ":" (or a JSON list).
    IMPORT_ROOTS: Annotated[list[Path], NoDecode] = []
    # Where the page lives (frontend/ of the source tree by default).
    FRONTEND_DIR: Path = Path(__file__).resolve().parents[2] / "frontend"

    @field_validator("IMPORT_ROOTS", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(os.pathsep) if part.strip()]
        return value

    @property
    def data_dir(self) -> Path:
        return self.DATA_DIR.expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite:///{self.data_dir / 'cryoclust.db'}"

    @property
    def broker_url(self) -> str:
        return self.BROKER_URL or "filesystem://localhost//"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem:")

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def import_roots(self) -> list[Path]:
        """The import roots, absolute with links resolved (what paths are checked against)."""
        return [root.expanduser().resolve() for root in self.IMPORT_ROOTS]

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.CORS_ORIGINS.split(",") if o.strip()]

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (a local worker)."""
        return {
            "CRYOCLUST_DATA_DIR": str(self.data_dir),
            "CRYOCLUST_DATABASE_URL": self.DATABASE_URL,
            "CRYOCLUST_BROKER_URL": self.BROKER_URL,
            "CRYOCLUST_QUEUE": self.QUEUE,
            "CRYOCLUST_DEVICE": self.DEVICE,
            "CRYOCLUST_HEARTBEAT_SECONDS": str(self.HEARTBEAT_SECONDS),
            "CRYOCLUST_STALE_AFTER_SECONDS": str(self.STALE_AFTER_SECONDS),
            "CRYOCLUST_VISIBILITY_TIMEOUT_SECONDS": str(self.VISIBILITY_TIMEOUT_SECONDS),
            "CRYOCLUST_IMPORT_ROOTS": os.pathsep.join(str(root) for root in self.import_roots),
        }
