"""Signing in without tokens in URLs: the page asks once, the server sets an HttpOnly,
SameSite=Strict session cookie, and no request of the page carries the token (checked in the
server's access log and in Chromium's own history); a cookie request from another origin that
would change something is refused; signing out removes the cookie."""

from __future__ import annotations

import sqlite3
import time

import pytest
from playwright.sync_api import expect
from support.api import upload_id, wait_for_job
from support.browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {
    "cluster_num": 2,
    "epoch_num": 1,
    "round_num": 1,
    "batch_size": 32,
    "size": 32,
    "device": "cpu",
    "umap": False,
}


def history_urls(profile) -> list[str]:
    """Every URL in Chromium's history database of `profile` (read once the browser closed)."""
    path = profile / "Default" / "History"
    deadline = time.monotonic() + 10
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT url FROM urls")]


def test_sign_in_sets_a_session_cookie_and_no_url_carries_the_token(
    browser, server, sim_stack, console, tmp_path
):
    console.allow(r"status of 401")  # the first requests, before the page is signed in
    with server.client() as client:  # scripts keep the Bearer header
        dataset_id = upload_id(client, sim_stack.mrcs)
        job_id = client.post("/api/jobs", json={"dataset_id": dataset_id, **TINY}).json()["id"]
        assert wait_for_job(client, job_id, timeout=180)["status"] == "succeeded"

    profile = tmp_path / "profile"
    context = browser.browser_type.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900},
        accept_downloads=True,
    )
    try:
        page = context.pages[0] if context.pages else context.new_page()
        console.watch(page)
        page.goto(server.url)
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        page.fill("#token-input", "wrong-token")
        page.click("#token-form button.primary")
        expect(page.locator("#token-note")).to_contain_text("refused")
        page.fill("#token-input", server.token)
        page.click("#token-form button.primary")
        expect(dialog).to_be_hidden()
        expect(page.locator("#health")).to_contain_text("worker")
        expect(page.locator("#sign-out")).to_be_visible()

        cookies = {c["name"]: c for c in context.cookies(server.url + "/api/")}
        session = cookies["cryoclust_session"]
        assert session["httpOnly"] is True and session["sameSite"] == "Strict"
        assert server.token not in session["value"]
        kept = page.evaluate(
            "() => document.cookie + JSON.stringify(sessionStorage) + JSON.stringify(localStorage)"
        )
        assert server.token not in kept and "cryoclust_session" not in kept  # HttpOnly: out of reach

        # The job view: images, the event stream and a download all ride on the cookie.
        page.goto(f"{server.url}/#/jobs/{job_id}")
        expect(page.locator("#gallery-grid .class-card")).to_have_count(2)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#gallery-grid img')].every((i) => i.complete && i.naturalWidth > 0)"
        )
        expect(page.locator("#live-state")).not_to_have_text("")
        with page.expect_download() as info:
            page.locator("#downloads a", has_text="cryoSPARC .cs").click()
        assert info.value.path().stat().st_size > 0
        with page.expect_download() as info:
            page.locator("#downloads a", has_text="Labels (CSV)").click()
        assert info.value.path().read_text().startswith("index,image_name,class")
        page.reload()
        expect(dialog).to_be_hidden()  # the cookie outlives a reload

        page.click("#sign-out")
        expect(dialog).to_be_visible()  # signed out: the server asks again
        assert "cryoclust_session" not in {c["name"] for c in context.cookies(server.url + "/api/")}
    finally:
        context.close()

    visited = history_urls(profile)
    assert any(url.startswith(server.url) for url in visited), visited
    assert not [url for url in visited if "token" in url or server.token in url]
    log = server.log.read_text(errors="replace")
    assert f"/api/jobs/{job_id}/events" in log and "average.png" in log and "particles.cs" in log, log[-3000:]
    assert "token=" not in log and server.token not in log


def test_a_cross_origin_request_with_the_cookie_is_refused(browser, server, sim_stack):
    with server.client() as client:
        dataset_id = upload_id(client, sim_stack.mrcs)
    context = browser.new_context()
    try:
        assert context.request.post(f"{server.url}/api/session", data={"token": server.token}).ok
        body = {"dataset_id": dataset_id, **TINY, "cluster_num": 1000}  # 422 once past the guard
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Referer": "http://evil.example/x"},
            {},
        ):
            refused = context.request.post(f"{server.url}/api/jobs", data=body, headers=headers)
            assert refused.status == 403, (headers, refused.status)
            gone = context.request.delete(f"{server.url}/api/datasets/{dataset_id}", headers=headers)
            assert gone.status == 403, (headers, gone.status)
        # From the server's own origin the same cookie passes (and meets the body check).
        own = context.request.post(f"{server.url}/api/jobs", data=body, headers={"Origin": server.url})
        assert own.status == 422, own.text()
        # Reading is no danger: a GET with the cookie alone answers.
        assert context.request.get(f"{server.url}/api/datasets/{dataset_id}").ok
        # The token in a URL no longer opens anything.
        bare = browser.new_context()
        assert bare.request.get(f"{server.url}/api/datasets?token={server.token}").status == 401
        bare.close()
        assert context.request.delete(f"{server.url}/api/session").status == 204
        assert context.request.get(f"{server.url}/api/datasets/{dataset_id}").status == 401
    finally:
        context.close()
    with server.client() as client:
        assert client.get(f"/api/datasets/{dataset_id}").status_code == 200  # never deleted
