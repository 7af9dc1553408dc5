"""Fixtures every test folder may use; the helpers behind them live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.databases import BACKENDS, database_url


@pytest.fixture(params=BACKENDS)
def db_url(request) -> Iterator[str]:
    """CRYOCLUST_DATABASE_URL of the test: SQLite in DATA_DIR ("") or a private PostgreSQL schema.

    Every test that runs a worker takes it, so the workers run on both databases.
    """
    with database_url(request.param) as url:
        yield url
