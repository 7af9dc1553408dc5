"""Shared helpers of the reliability tests: real API servers, real Redis servers, real files.

A module with its own name (not conftest) so `import` finds it whatever other test folders hold.
"""

from __future__ import annotations

import os
import shutil
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
import uvicorn

from backend.app import create_app
from cryoclust.core.settings import Settings

TAG = uuid.uuid4().hex[:10]
TERMINAL = ("succeeded", "failed", "cancelled")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def mrc_bytes(images: np.ndarray, folder: Path, pixel_size: float = 2.0) -> bytes:
    """The bytes of a valid MRC stack of `images`, written by mrcfile."""
    path = folder / f"valid-{uuid.uuid4().hex[:8]}.mrcs"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(images))
        mrc.set_image_stack()
        mrc.voxel_size = pixel_size
    data = path.read_bytes()
    path.unlink()
    return data


def write_stack(path: Path, n: int = 60, box: int = 32, seed: int = 0) -> Path:
    """A real .mrcs with three kinds of image plus noise (classifiable in a few epochs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:box, :box] - box / 2
    shapes = [np.exp(-(xx**2 + yy**2) / (box / 6) ** 2), (np.abs(xx) < box / 6) * 1.0, (np.abs(yy) < box / 8) * 1.0]
    images = np.stack([shapes[i % 3] for i in range(n)]) + 0.3 * rng.normal(size=(n, box, box))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mrc_bytes(images.astype(np.float32), path.parent))
    return path


def make_settings(data_dir: Path, **overrides) -> Settings:
    values = dict(
        DATA_DIR=data_dir,
        DATABASE_URL="",
        BROKER_URL="",
        QUEUE=f"rel-{TAG}-{uuid.uuid4().hex[:6]}",
        API_TOKEN="",
        DEVICE="cpu",
        CORS_ORIGINS="",
        HEARTBEAT_SECONDS=1.0,
        STALE_AFTER_SECONDS=60.0,
    )
    values.update(overrides)
    return Settings(**values)


@dataclass
class Api:
    url: str
    app: object
    settings: Settings

    def client(self, **kwargs) -> httpx.Client:
        token = self.settings.API_TOKEN
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)


@contextmanager
def running_api(settings: Settings, port: int | None = None) -> Iterator[Api]:
    """The real app served by uvicorn on a free port, in a thread of this process."""
    app = create_app(settings)
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield Api(f"http://127.0.0.1:{port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(10)


def leftovers(data_dir: Path) -> list[str]:
    """Files left in DATA_DIR/tmp (an upload in progress leaves them only while it runs)."""
    tmp = data_dir / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


class Process:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, command: list[str], log: Path, env: dict | None = None) -> None:
        self.command = command
        self.log = log
        self._out = open(log, "ab")
        self.process = subprocess.Popen(command, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()
        return self.process.returncode

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def start_worker(settings: Settings, log: Path, name: str) -> Process:
    env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "cryoclust", "worker", "--loglevel", "info", "--quiet", "--name", name]
    return Process(command, log, env)


class RedisServer:
    """A private redis-server on a free port with no persistence: free to kill and restart."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder = folder
        self.port = port or free_port()
        self.process: Process | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.folder)]
        self.process = Process(command, self.folder / "redis.log")
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if time.monotonic() > deadline or not self.process.alive():
                raise RuntimeError(f"redis-server did not start: {self.process.tail()}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.stop()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def wait_for_job(client: httpx.Client, job_id: str, statuses=TERMINAL, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.2)


def parse_sse(lines) -> Iterator[dict]:
    """{id, event, data} for each event of an SSE line iterator (comments and retry skipped)."""
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
