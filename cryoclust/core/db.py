"""Database engine and sessions, shared by the API and the workers (no web imports here).

SQLite runs in WAL mode so the API reads while a worker writes; PostgreSQL is used by URL.
The schema is created on start and kept across restarts (create_all adds only what is missing).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from cryoclust.core.settings import Settings
from cryoclust.core.tables import Base


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def create_schema_once(engine: Engine, attempts: int = 5) -> None:
    """create_all, tolerating another process (API, workers starting together) doing the same."""
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except DBAPIError:  # "table already exists" or a duplicate type: look again
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 + 0.2 * random.random())


class Database:
    """An engine plus a session factory; creates the schema when made."""

    def __init__(self, url: str, create_schema: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create_schema:
            create_schema_once(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Database":
        return cls(settings.database_url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
