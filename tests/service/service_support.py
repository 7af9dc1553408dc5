"""Helpers for the service tests: a real API server (uvicorn in a thread), real SQLite or
PostgreSQL, real Redis, real worker processes, and tiny particle stacks written with mrcfile."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mrcfile
import numpy as np
import pytest
import sqlalchemy as sa
import uvicorn

from backend.app import create_app
from cryoclust.core.settings import Settings

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
SESSION_TAG = uuid.uuid4().hex[:10]
TERMINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_port(port: int, what: str) -> None:
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(("127.0.0.1", port)) != 0:
            pytest.fail(f"{what} is not answering on 127.0.0.1:{port}; run `make services`")


def write_stack(path: Path, n: int = 60, box: int = 32, seed: int = 0, pixel_size: float = 2.0) -> Path:
    """A real .mrcs with 3 well separated kinds of image plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:box, :box] - box / 2
    shapes = [np.exp(-(xx**2 + yy**2) / (box / 6) ** 2), (np.abs(xx) < box / 6).astype(float), (np.abs(yy) < box / 8).astype(float)]
    images = np.stack([shapes[i % 3] for i in range(n)]) + 0.3 * rng.normal(size=(n, box, box))
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(images.astype(np.float32))
        mrc.voxel_size = pixel_size
    return path


@dataclass
class Api:
    url: str
    app: object
    settings: Settings

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.settings.API_TOKEN}"} if self.settings.API_TOKEN else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


@contextmanager
def running_api(settings: Settings) -> Iterator[Api]:
    """The real app served by uvicorn on a free port, in a thread of this process."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the API server did not start")
        time.sleep(0.02)
    try:
        yield Api(f"http://127.0.0.1:{port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards: parallel runs never collide."""
    require_port(5432, "PostgreSQL")
    schema = f"cc_{SESSION_TAG}_{uuid.uuid4().hex[:6]}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def base_settings(data_dir: Path, **overrides) -> Settings:
    values = dict(
        DATA_DIR=data_dir,
        DATABASE_URL="",
        BROKER_URL="",
        QUEUE=f"test-{SESSION_TAG}-{uuid.uuid4().hex[:6]}",
        API_TOKEN="",
        DEVICE="cpu",
        CORS_ORIGINS="",
        HEARTBEAT_SECONDS=1.0,
        STALE_AFTER_SECONDS=60.0,
    )
    values.update(overrides)
    return Settings(**values)



def upload(client: httpx.Client, *paths: Path, name: str | None = None) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    return client.post("/api/datasets", files=files, data={"name": name} if name else None)


def wait_for(client: httpx.Client, job_id: str, statuses=TERMINAL, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.2)


def read_sse(client: httpx.Client, path: str, headers: dict | None = None, limit: int = 10000) -> list[dict]:
    """Every event of a stream until it closes: [{id, event, data}] (data as text)."""
    events, current = [], {}
    with client.stream("GET", path, headers=headers or {}, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                    if len(events) >= limit:
                        break
                current = {}
            elif line.startswith(":") or line.startswith("retry:"):
                continue
            else:
                key, _, value = line.partition(": ")
                current[key] = value
    return events


class WorkerProcess:
    """A real worker process (celery worker) with its own environment and log file."""

    def __init__(self, settings: Settings, log: Path, command: list[str] | None = None) -> None:
        # One thread each: the test machine has two cores shared by parallel test runs.
        env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        command = command or [sys.executable, "-m", "cryoclust", "worker", "--loglevel", "info", "--quiet"]
        self.log = log
        self._out = open(log, "ab")
        self.process = subprocess.Popen(command, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()
        return self.process.returncode

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]
