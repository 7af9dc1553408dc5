"""Database engine and sessions, shared by the API and the workers (no web imports here).

SQLite runs in WAL mode so the API reads while a worker writes; PostgreSQL is used by URL.
The schema is brought to the newest revision when a Database is made (cryoclust.core.schema:
Alembic migrations under a lock), or the process refuses to start on a newer one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from cryoclust.core import schema
from cryoclust.core.settings import Settings


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


class Database:
    """An engine plus a session factory; upgrades the schema to head when made.

    Raises schema.SchemaTooNew when the database was upgraded by a newer cryoclust.
    """

    def __init__(self, url: str, upgrade: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if upgrade:
            try:
                schema.upgrade(self.engine)
            except BaseException:
                self.engine.dispose()
                raise

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.database_url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


_process_databases: dict[str, Database] = {}
_process_lock = threading.Lock()


def process_database(settings: Settings) -> Database:
    """This process's one Database for the settings' URL, made (and its schema checked) once.

    A worker makes it at start-up, so that a newer schema stops it before Celery starts; its
    task module then uses the same engine instead of checking the schema a second time.
    """
    with _process_lock:
        if settings.database_url not in _process_databases:
            _process_databases[settings.database_url] = Database.from_settings(settings)
        return _process_databases[settings.database_url]
