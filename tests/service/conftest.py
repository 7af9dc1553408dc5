"""Fixtures for the service tests (the helpers they use live in service_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service_support import Api, Settings, WorkerProcess, base_settings, postgres_schema, running_api, write_stack


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, tmp_path) -> Iterator[Api]:
    """The API on SQLite and on PostgreSQL (filesystem broker: jobs queue but nobody runs them)."""
    if request.param == "sqlite":
        with running_api(base_settings(tmp_path / "data")) as server:
            yield server
    else:
        with postgres_schema() as url, running_api(base_settings(tmp_path / "data", DATABASE_URL=url)) as server:
            yield server


@pytest.fixture
def sqlite_api(tmp_path) -> Iterator[Api]:
    with running_api(base_settings(tmp_path / "data")) as server:
        yield server


@pytest.fixture
def stack_file(tmp_path) -> Path:
    return write_stack(tmp_path / "in" / "particles.mrcs")


@pytest.fixture
def workers(tmp_path):
    """start(settings, command=None) -> WorkerProcess; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, command: list[str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker{len(started)}.log", command)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(10)
