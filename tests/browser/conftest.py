"""Fixtures for the page tests: a real `cryoclust serve` (API + local worker) on a free port,
Debian's chromium driven by Playwright, and pages that fail the test on any console error."""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.databases import database_url
from support.processes import ServeProcess
from support.settings import child_env, make_settings

SERVER_START_SECONDS = 90


@dataclass
class Server:
    url: str
    token: str
    data_dir: Path
    log: Path
    import_root: Path  # CRYOCLUST_IMPORT_ROOTS: files here may be imported by path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    """`cryoclust serve` with its embedded filesystem broker and local worker, token required, on
    SQLite: the set-up `make run` serves. The page reaches the database only through the API,
    whose routes and workers tests/service and tests/reliability run on both databases."""
    root = tmp_path_factory.mktemp("serve")
    with database_url("sqlite") as url:
        import_root = root / "lab"
        import_root.mkdir()
        settings = make_settings(
            root / "data", API_TOKEN=secrets.token_urlsafe(16), DATABASE_URL=url, IMPORT_ROOTS=[import_root]
        )
        serve = ServeProcess(child_env(settings), root, "--host", "127.0.0.1", "--access-log")
        try:
            serve.start(lambda health: bool(health.get("workers")), timeout=SERVER_START_SECONDS)
            yield Server(
                url=serve.url,
                token=settings.API_TOKEN,
                data_dir=settings.data_dir,
                log=serve.log,
                import_root=import_root,
            )
        finally:
            serve.stop(15)


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
    args = parse_args(
        ["simulate", "-n", "200", "-k", "4", "--box", "32", "--snr", "2", "--seed", "1", "-o", str(folder)]
    )
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
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser, server, console):
    """A page of a fresh context already signed in (it holds the session cookie, as after the
    sign-in dialog); no console errors allowed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    signed_in = context.request.post(f"{server.url}/api/session", data={"token": server.token})
    assert signed_in.ok, signed_in.text()
    context.set_default_timeout(20_000)
    page = context.new_page()
    console.watch(page)
    yield page
    context.close()
    assert console.unexpected() == [], "console errors on the page"
