"""The page's "Import from server path" field in Debian's chromium against a real `cryoclust
serve`: a refused path shows the server's reason, an accepted one becomes a dataset read in place
and is chosen in the job form."""

from __future__ import annotations

import hashlib
import re

import pytest
from playwright.sync_api import expect
from support.stacks import write_stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_import_from_server_path(page, server, console, tmp_path):
    console.allow(r"status of 4\d\d")  # the browser logs the refused request itself
    stack = write_stack(server.import_root / "page-import" / "run7.mrcs", n=40, box=24)
    outside = write_stack(tmp_path / "elsewhere.mrcs", n=5, box=24)
    page.goto(server.url)
    expect(page.locator("#jobs-list")).to_contain_text(re.compile("No jobs yet|Job"))

    page.fill("#import-path", str(outside))
    page.click("#import-button")
    expect(page.locator("#upload-error")).to_contain_text(f"{outside} is outside the import roots")

    page.fill("#import-path", str(stack))
    page.fill("#dataset-apix", "1.25")
    page.click("#import-button")
    card = page.locator(".dataset-card", has_text="run7.mrcs")
    expect(card).to_contain_text("40 particles")
    expect(card).to_contain_text("1.250 Å/px")
    expect(card).to_contain_text(f"imported from {stack} (read in place)")
    expect(page.locator("#upload-error")).to_be_hidden()
    expect(page.locator("#import-path")).to_have_value("")
    dataset_id = card.get_attribute("data-id")
    expect(page.locator("#job-dataset")).to_have_value(dataset_id)
    thumbnail = card.locator(".thumb-strip img").first.element_handle()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail)
    with server.client() as client:
        assert client.get(f"/api/datasets/{dataset_id}").json()["imported_from"] == str(stack)
        assert client.delete(f"/api/datasets/{dataset_id}").status_code == 204
    assert stack.is_file(), "deleting an imported dataset leaves the lab's file alone"


def test_large_upload_goes_in_pieces_and_resumes_after_a_dropped_connection(page, server, console, tmp_path):
    """A file over the resumable threshold (32 MiB) goes over tus in 16 MiB pieces; the second
    piece's connection is reset; the page asks the server's offset and finishes the upload."""
    console.allow(r"ERR_CONNECTION_RESET|status of 4\d\d")
    stack = write_stack(tmp_path / "large.mrcs", n=9000, box=32)  # 36.9 MB: three pieces
    data = stack.read_bytes()
    seen: list[str] = []
    patches = {"count": 0}

    def drop_second_piece(route):
        request = route.request
        seen.append(request.method)
        if request.method == "PATCH":
            patches["count"] += 1
            if patches["count"] == 2:
                route.abort("connectionreset")
                return
        route.continue_()

    page.route("**/api/uploads/*", drop_second_piece)
    page.goto(server.url)
    expect(page.locator("#jobs-list")).to_contain_text(re.compile("No jobs yet|Job"))
    page.fill("#dataset-name", "large, resumed")
    page.set_input_files("#file-input", str(stack))
    expect(page.locator("#upload-notice")).to_contain_text("resuming", timeout=30_000)
    card = page.locator(".dataset-card", has_text="large, resumed")
    expect(card).to_contain_text("9,000 particles", timeout=120_000)
    expect(page.locator("#upload-error")).to_be_hidden()
    # After the reset: HEAD (where does the server stand?) and the rest, from there.
    reset_at = [i for i, m in enumerate(seen) if m == "PATCH"][1]
    assert "HEAD" in seen[reset_at + 1 :] and seen.count("PATCH") == 4, seen
    with server.client() as client:
        dataset = client.get(f"/api/datasets/{card.get_attribute('data-id')}").json()
    assert dataset["sha256"] == hashlib.sha256(data).hexdigest()
    assert (
        page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('cryoclust.upload:')).length") == 0
    )
