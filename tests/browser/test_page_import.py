"""The page's "Import from server path" field in Debian's chromium against a real `cryoclust
serve`: a refused path shows the server's reason, an accepted one becomes a dataset read in place
and is chosen in the job form."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from support.stacks import write_stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]
on_sqlite = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@on_sqlite
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
