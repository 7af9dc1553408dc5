"""Fixtures of the service tests (their helpers live in tests/support/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.api import Api, running_api
from support.databases import postgres_schema
from support.processes import Process, start_worker
from support.settings import make_settings
from support.stacks import write_stack

from cryoclust.core.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, tmp_path) -> Iterator[Api]:
    """The API on SQLite and on PostgreSQL (filesystem broker: jobs queue but nobody runs them)."""
    if request.param == "sqlite":
        with running_api(make_settings(tmp_path / "data")) as server:
            yield server
    else:
        with (
            postgres_schema() as url,
            running_api(make_settings(tmp_path / "data", DATABASE_URL=url)) as server,
        ):
            yield server


@pytest.fixture
def sqlite_api(tmp_path) -> Iterator[Api]:
    with running_api(make_settings(tmp_path / "data")) as server:
        yield server


@pytest.fixture
def stack_file(tmp_path) -> Path:
    return write_stack(tmp_path / "in" / "particles.mrcs")


@pytest.fixture
def workers(tmp_path):
    """start(settings, command=None) -> Process; all are stopped after the test."""
    started: list[Process] = []

    def start(settings: Settings, command: list[str] | None = None) -> Process:
        worker = start_worker(settings, tmp_path / f"worker{len(started)}.log", f"w{len(started)}", command)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(10)
