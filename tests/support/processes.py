"""Real child processes of a test: workers, `cryoclust serve`, a private redis-server.

Each runs in its own session with its output in a log file, so a test can kill it (and all it
started) and show the end of its log when something goes wrong.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cryoclust.core.settings import Settings
from support.net import free_port, port_open
from support.settings import child_env

REPO = Path(__file__).resolve().parents[2]


class Process:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, command: list[str], log: Path, env: dict | None = None) -> None:
        self.command = command
        self.log = log
        self._out = open(log, "ab")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )

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
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit status."""
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


def worker_command(name: str, loglevel: str = "info") -> list[str]:
    return [sys.executable, "-m", "cryoclust", "worker", "--loglevel", loglevel, "--quiet", "--name", name]


def start_worker(settings: Settings, log: Path, name: str, command: list[str] | None = None) -> Process:
    """`cryoclust worker` (or `command`) with the settings' environment."""
    return Process(command or worker_command(name), log, child_env(settings))


def wait_for_health(
    url: str,
    process: Process,
    ready: Callable[[dict], bool] = lambda h: True,
    timeout: float = 90,
    headers: dict | None = None,
) -> dict:
    """/api/health once `ready(health)` holds; fails with the log if the process exits first."""
    deadline = time.monotonic() + timeout
    health = None
    while True:
        try:
            response = httpx.get(f"{url}/api/health", headers=headers or {}, timeout=2)
            if response.status_code == 200:
                health = response.json()
                if ready(health):
                    return health
        except httpx.TransportError:
            pass
        if not process.alive():
            raise AssertionError(
                f"{process.command} exited with {process.process.returncode}:\n{process.tail()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout} s (health {health}):\n{process.tail()}")
        time.sleep(0.2)


class ServeProcess:
    """`cryoclust serve ARGS` on a fixed port of its own, restartable (each start has its log)."""

    def __init__(self, env: dict, folder: Path, *args: str, port: int | None = None) -> None:
        self.env = env
        self.folder = folder
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None
        self.starts = 0

    def start(self, ready: Callable[[dict], bool] = lambda h: True, timeout: float = 90) -> dict:
        if self.process:  # the previous run's log is closed (its process ended or is stopped)
            self.process.stop()
        self.starts += 1
        command = [sys.executable, "-m", "cryoclust", "serve", "--port", str(self.port), *self.args]
        self.process = Process(command, self.folder / f"serve{self.starts}.log", self.env)
        token = self.env.get("CRYOCLUST_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return wait_for_health(self.url, self.process, ready, timeout, headers)

    @property
    def log(self) -> Path:
        return self.process.log

    def logs(self) -> str:
        """The output of every start so far."""
        return "".join(
            (self.folder / f"serve{i}.log").read_text(errors="replace") for i in range(1, self.starts + 1)
        )

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.stop()

    def stop(self, timeout: float = 30) -> int | None:
        return self.process.stop(timeout) if self.process else None


class RedisServer:
    """A private redis-server on a free port: with no persistence (free to kill and restart
    empty), or with `persistent` an append-only file synced at every write, as a deployment
    keeps its queue (a restart with `restart()` keeps every queued task)."""

    def __init__(self, folder: Path, port: int | None = None, persistent: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder = folder
        self.port = port or free_port()
        self.persistent = persistent
        self.process: Process | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            str(self.folder),
        ]
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

    def restart(self) -> RedisServer:
        """Stop (SIGTERM: a persistent server writes its file out) and start on the same port."""
        if self.process:
            self.process.stop(20)
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
