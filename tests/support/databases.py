"""The databases tests run on: SQLite in DATA_DIR, or a private schema of the real PostgreSQL.

Each PostgreSQL user gets its own schema (dropped afterwards), so tests running at once, in one
run or in parallel runs on the same server, never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from support.net import require_port

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
TAG = uuid.uuid4().hex[:10]  # this test run; names its queues and schemas
BACKENDS = ("sqlite", "postgresql")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose search_path is a fresh schema of the test database, dropped afterwards."""
    require_port(5432, "PostgreSQL")
    schema = f"cc_{TAG}_{uuid.uuid4().hex[:6]}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@contextmanager
def database_url(backend: str) -> Iterator[str]:
    """CRYOCLUST_DATABASE_URL for `backend`: empty (SQLite in DATA_DIR) or a private schema."""
    if backend == "sqlite":
        yield ""
    elif backend == "postgresql":
        with postgres_schema() as url:
            yield url
    else:
        raise ValueError(f"unknown database backend {backend!r}")
