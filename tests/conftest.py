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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n 2 --dist loadgroup` (what `make test` runs): a file's tests stay on one
    worker, so its module-scoped stacks are made once, and the page tests share one server and one
    Chromium. Without pytest-xdist's -n the marks do nothing."""
    for item in items:
        group = "browser" if item.get_closest_marker("browser") else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
