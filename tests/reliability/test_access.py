"""Access: with CRYOCLUST_API_TOKEN set, every /api route (downloads and the event stream
included) answers 401 without it; without a token the server listens on loopback only and says
so; CORS is closed unless origins are configured, and then only for those origins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from support.api import running_api
from support.net import free_port, port_open
from support.processes import REPO, ServeProcess
from support.settings import child_env, make_settings

TOKEN = "reliability-Token-0123456789"
# The only routes outside /api: the page, its files, Plotly.js and the API documentation.
PUBLIC = {
    "/",
    "/static/{relative:path}",
    "/vendor/plotly.min.js",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
# Signing in takes the token in its body (and answers 401 to a wrong one); signing out is harmless.
SIGN_IN = "/api/session"
SAMPLE = {
    "dataset_id": "d0",
    "job_id": "j0",
    "index": "0",
    "round_ref": "1",
    "c": "1",
    "class_number": "1",
    "relative:path": "index.html",
}


def walk_routes(routes, prefix: str = "") -> list[tuple[str, set[str]]]:
    """(path, methods) of every route, through included routers as well."""
    found = []
    for route in routes:
        if hasattr(route, "path") and hasattr(route, "methods"):
            found.append((prefix + route.path, set(route.methods or ())))
        elif hasattr(route, "path") and hasattr(route, "routes"):  # a Mount
            found += walk_routes(route.routes, prefix + route.path)
        elif hasattr(route, "original_router"):  # FastAPI's lazily included router
            context = getattr(route, "include_context", None)
            found += walk_routes(
                route.original_router.routes, prefix + (getattr(context, "prefix", "") or "")
            )
        else:
            raise AssertionError(f"route of unknown kind {type(route).__name__}: cannot check its access")
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: SAMPLE.get(m.group(1), "1"), path)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("access") / "data", API_TOKEN=TOKEN)
    with running_api(settings) as api:
        yield api


def test_every_api_route_needs_the_token(guarded):
    routes = walk_routes(guarded.app.routes)
    paths = {path for path, _ in routes}
    spec = set(guarded.app.openapi()["paths"])
    assert spec <= paths, f"routes the walk missed: {spec - paths}"
    assert {p for p in paths if not p.startswith("/api/")} <= PUBLIC, "a new route outside /api"
    api_routes = [
        (path, m)
        for path, methods in routes
        if path.startswith("/api/") and path != SIGN_IN
        for m in methods - {"HEAD"}
    ]
    assert len(api_routes) >= 20
    with httpx.Client(base_url=guarded.url, timeout=30) as anonymous:
        for path, method in api_routes:
            url = concrete(path)
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"},
            ):
                response = anonymous.request(method, url, headers=headers)
                assert response.status_code == 401, (method, url, headers, response.status_code)
                assert response.headers.get("www-authenticate") == "Bearer"
            assert anonymous.request(method, url + "?token=wrong").status_code == 401
            # With the token: past the guard (404 for the made-up ids, 422 for a missing body...).
            allowed = anonymous.request(method, url, headers={"Authorization": f"Bearer {TOKEN}"})
            assert allowed.status_code not in (401, 403) and allowed.status_code < 500, (
                method,
                url,
                allowed.text,
            )
        # A token in a URL opens nothing: it would land in histories and proxy logs.
        assert anonymous.get(f"/api/health?token={TOKEN}").status_code == 401


def test_token_is_not_leaked_in_errors_or_logs(tmp_path):
    """A real `cryoclust serve` with a token: right and wrong tokens, in the header and in
    ?token=, on routes that answer 200, 401, 404 and 422; then its whole output is read."""
    settings = make_settings(tmp_path / "data", API_TOKEN=TOKEN)
    serve = ServeProcess(child_env(settings), tmp_path, "--no-worker", "--access-log")
    serve.start()
    wrong = f"{TOKEN}x"
    answers = []
    try:
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            for auth in ({"Authorization": f"Bearer {wrong}"}, {"Authorization": f"Bearer {TOKEN}"}):
                answers += [
                    client.get("/api/jobs", headers=auth),
                    client.get("/api/jobs/nope", headers=auth),
                    client.post("/api/jobs", json={"cluster_num": "x"}, headers=auth),
                    client.get("/api/jobs/nope/events", headers=auth),
                ]
            for token in (wrong, TOKEN):
                answers += [
                    client.get(f"/api/jobs?token={token}"),
                    client.get(f"/api/datasets/nope?token={token}"),
                    client.get(f"/api/jobs/nope/events?token={token}&last_event_id=x"),
                ]
            bad_stack = [("files", ("in.mrcs", b"not an mrc file at all"))]
            answers.append(client.post(f"/api/datasets?token={TOKEN}", files=bad_stack))
    finally:
        serve.stop()
    assert {a.status_code for a in answers} >= {200, 401, 404, 422}, [a.status_code for a in answers]
    assert all(TOKEN not in a.text and TOKEN not in str(a.headers) for a in answers)
    log = serve.logs()
    assert f"open http://127.0.0.1:{serve.port}/" in log, log  # the server's real output was read
    assert "GET /api/jobs?token=*** HTTP/1.1" in log, log  # access lines were written, masked
    assert TOKEN not in log, log


def _listening(pid: int, port: int) -> set[str]:
    """Addresses the process (or its children) listens on at `port`."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    addresses = set()
    for process in processes:
        for conn in process.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                addresses.add(conn.laddr.ip)
    return addresses


def _serve(tmp_path, *args: str, token: str = "") -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYOCLUST_")}  # defaults only
    env.update(CRYOCLUST_DATA_DIR=str(tmp_path / "data"), CRYOCLUST_API_TOKEN=token, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "cryoclust", "serve", "--no-worker", "--port", str(port), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not _listening(process.pid, port):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(f"serve did not start: {process.communicate()[0]}")
        time.sleep(0.1)
    return process, port


def _stop(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        return process.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


def _outward_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and not address.address.startswith("127."):
                return address.address
    return None


def test_without_a_token_serve_listens_on_loopback_only_and_says_so(tmp_path):
    process, port = _serve(tmp_path)
    try:
        assert _listening(process.pid, port) == {"127.0.0.1"}
        assert port_open(port)
        outward = _outward_address()
        if outward:
            assert not port_open(port, outward), f"reachable on {outward}"
    finally:
        output = _stop(process)
    assert "listening on 127.0.0.1 only" in output, output


def test_open_host_without_a_token_warns(tmp_path):
    process, port = _serve(tmp_path, "--host", "0.0.0.0")
    try:
        assert _listening(process.pid, port) == {"0.0.0.0"}
    finally:
        output = _stop(process)
    assert "WARNING" in output and "CRYOCLUST_API_TOKEN" in output, output
    process, port = _serve(tmp_path, "--host", "0.0.0.0", token=TOKEN)
    output = _stop(process)
    assert "WARNING" not in output, output


PREFLIGHT = {
    "Origin": "http://elsewhere.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_cors_closed_by_default_even_for_preflight(tmp_path):
    with running_api(make_settings(tmp_path / "data")) as api, api.client() as client:
        preflight = client.options("/api/jobs", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers
        simple = client.get("/api/datasets", headers={"Origin": "http://elsewhere.example"})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_cors_opens_only_for_configured_origins(tmp_path):
    settings = make_settings(tmp_path / "data", CORS_ORIGINS="http://elsewhere.example", API_TOKEN=TOKEN)
    with running_api(settings) as api, api.client() as client:
        preflight = client.options("/api/jobs", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://elsewhere.example"
        assert "access-control-allow-credentials" not in preflight.headers
        stranger = client.options("/api/jobs", headers={**PREFLIGHT, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers
        # CORS opens the door to the browser, not to the data: the token is still required.
        anonymous = httpx.get(f"{api.url}/api/datasets", headers={"Origin": "http://elsewhere.example"})
        assert anonymous.status_code == 401
