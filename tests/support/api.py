"""The real API, served by uvicorn in a thread of the test process, and what clients do with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from backend.app import create_app
from cryoclust.core.settings import Settings
from cryoclust.core.tables import TERMINAL
from support.net import free_port


@dataclass
class Api:
    url: str
    app: object
    settings: Settings

    def client(self, **kwargs) -> httpx.Client:
        token = self.settings.API_TOKEN
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


@contextmanager
def running_api(settings: Settings, port: int | None = None) -> Iterator[Api]:
    """The real app on a free port (or `port`), stopped afterwards."""
    app = create_app(settings)
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the API server did not start")
        time.sleep(0.02)
    try:
        yield Api(f"http://127.0.0.1:{port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(10)


def upload(client: httpx.Client, *paths: Path, name: str | None = None) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    return client.post("/api/datasets", files=files, data={"name": name} if name else None)


def upload_id(client: httpx.Client, *paths: Path) -> str:
    """Upload and return the new dataset's id (the upload must succeed)."""
    response = upload(client, *paths)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_for_job(
    client: httpx.Client, job_id: str, statuses: Iterable[str] = TERMINAL, timeout: float = 120, logs=()
) -> dict:
    """The job once its status is one of `statuses`; `logs` (processes) are shown on a timeout."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            tails = "\n".join(p.tail(1500) for p in logs)
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}\n{tails}")
        time.sleep(0.2)


def parse_sse(lines: Iterable[str]) -> Iterator[dict]:
    """{id, event, data} (as text) for each event of an SSE line iterator; comments skipped."""
    current: dict = {}
    for line in lines:
        if not line:
            if "event" in current:
                yield current
            current = {}
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            key, _, value = line.partition(": ")
            current[key] = value


def read_sse(client: httpx.Client, path: str, headers: dict | None = None, limit: int = 10000) -> list[dict]:
    """Every event of a stream until it closes (or `limit` events)."""
    events = []
    with client.stream("GET", path, headers=headers or {}, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in parse_sse(response.iter_lines()):
            events.append(event)
            if len(events) >= limit:
                break
    return events
