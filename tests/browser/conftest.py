"""Fixtures for the page tests: a real `cryoclust serve` (API + local worker) on a random port,
Debian's chromium driven by Playwright, and pages that fail the test on any console error."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN_KEY = "cryoclust.apiToken"  # frontend/js/api.js keeps the token under this key
SERVER_START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    data_dir: Path
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """`cryoclust serve` with its embedded filesystem broker and local worker, token required."""
    root = tmp_path_factory.mktemp("serve")
    port = free_port()
    token = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "CRYOCLUST_DATA_DIR": str(root / "data"),
        "CRYOCLUST_HOST": "127.0.0.1",
        "CRYOCLUST_PORT": str(port),
        "CRYOCLUST_QUEUE": f"browser-{uuid.uuid4().hex[:12]}",
        "CRYOCLUST_DEVICE": "cpu",
        "CRYOCLUST_API_TOKEN": token,
        "CRYOCLUST_DATABASE_URL": "",
        "CRYOCLUST_BROKER_URL": "",
        "PYTHONUNBUFFERED": "1",
        # One torch thread: on a shared 2-core machine more threads only fight each other.
        "OMP_NUM_THREADS": "1",
    }
    log = root / "serve.log"
    command = [sys.executable, "-m", "cryoclust", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(url=f"http://127.0.0.1:{port}", token=token, data_dir=root / "data", log=log)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        health = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"cryoclust serve exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                with srv.client() as client:
                    response = client.get("/api/health", timeout=2)
                if response.status_code == 200:
                    health = response.json()
                    if health.get("workers"):
                        break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"cryoclust serve not ready in {SERVER_START_SECONDS} s (health {health}):\n{_log_tail(log)}")
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@dataclass
class SimulatedStack:
    folder: Path
    mrcs: Path
    star: Path
    n: int
    box: int
    pixel_size: float


@pytest.fixture(scope="session")
def sim_stack(tmp_path_factory) -> SimulatedStack:
    """200 particles of 32 px in 4 views, written by `cryoclust simulate`."""
    from cryoclust.cli import parse_args
    from worker.engine.commands import simulate

    folder = tmp_path_factory.mktemp("sim")
    args = parse_args(["simulate", "-n", "200", "-k", "4", "--box", "32", "--snr", "2", "--seed", "1", "-o", str(folder)])
    simulate.main(args)
    return SimulatedStack(folder, folder / "particles.mrcs", folder / "particles.star", 200, 32, 2.0)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # Other test runs share the 2 cores: give assertions on the page time to come true.
    expect.set_options(timeout=15_000)

    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class ConsoleLog:
    """Console errors and uncaught exceptions of a page; `allow` names expected ones."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def watch(self, page) -> None:
        page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser, server, console):
    """A page of a fresh context that already holds the API token; no console errors allowed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.add_init_script(f"sessionStorage.setItem({TOKEN_KEY!r}, {server.token!r});")
    context.set_default_timeout(20_000)
    page = context.new_page()
    console.watch(page)
    yield page
    context.close()
    assert console.unexpected() == [], "console errors on the page"
