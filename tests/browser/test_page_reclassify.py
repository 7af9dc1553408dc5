"""Clean and reclassify in the page: tick classes, "New job from these classes" makes a derived
dataset and opens the job form on it; the new job's view says where its dataset came from. A
stack without a pixel size shows its FRC figures per Nyquist, never in Å."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from support.api import upload_id, wait_for_job
from support.stacks import write_stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {
    "cluster_num": 3,
    "epoch_num": 1,
    "round_num": 1,
    "batch_size": 32,
    "size": 32,
    "device": "cpu",
    "umap": False,
}


def test_new_job_from_ticked_classes(page, server, tmp_path):
    stack = write_stack(tmp_path / "nopix.mrcs", n=90, box=32, pixel_size=0.0)
    with server.client() as client:
        parent = upload_id(client, stack)
        job_id = client.post("/api/jobs", json={"dataset_id": parent, **TINY}).json()["id"]
        assert wait_for_job(client, job_id, timeout=180)["status"] == "succeeded"
        counts = {
            c["class"]: c["count"] for c in client.get(f"/api/jobs/{job_id}/rounds/final/classes").json()
        }

    page.goto(f"{server.url}/#/jobs/{job_id}")
    cards = page.locator("#gallery-grid .class-card")
    expect(cards).to_have_count(3)
    labels = page.locator("#gallery-grid .quality")
    expect(labels.first).to_contain_text("Nyquist · pixel size unknown")
    assert "Å" not in " ".join(labels.all_inner_texts())

    reclassify = page.locator("#subset-reclassify")
    expect(reclassify).to_be_disabled()
    for cls in (1, 3):
        page.locator(f".class-card[data-cls='{cls}'] input[type=checkbox]").check()
    expect(reclassify).to_be_enabled()
    reclassify.click()
    page.wait_for_url(re.compile(r"#/new/\w+$"))
    derived = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-dataset")).to_have_value(derived)
    chosen = counts[1] + counts[3]
    expect(page.locator("#job-dataset option:checked")).to_contain_text(f"classes 1,3 ({chosen} ×")
    card = page.locator(f".dataset-card[data-id='{derived}']")
    expect(card).to_contain_text(f"subset of dataset {parent} by job #{job_id} round 1, classes 1, 3")
    expect(card).to_contain_text("pixel size unknown")

    for field, value in {**TINY, "cluster_num": 2}.items():
        if isinstance(value, bool):
            page.set_checked(f"#job-{field}", value)
        else:
            page.fill(f"#job-{field}", str(value))
    page.click("#job-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/jobs/\w+$"))
    second = page.url.rsplit("/", 1)[1]
    origin = page.locator("#job-origin")
    expect(origin).to_contain_text(f"subset of dataset {parent} by job #{job_id} round 1, classes 1, 3")
    expect(page.locator(".job-head")).to_contain_text(f"{chosen} particles")
    with server.client() as client:
        done = wait_for_job(client, second, timeout=180)
        assert done["status"] == "succeeded" and done["dataset_id"] == derived
        assert (
            len(client.get(f"/api/jobs/{second}/rounds/final/labels.csv").text.strip().splitlines())
            == chosen + 1
        )
    expect(page.locator(".job-head")).to_contain_text("device cpu")
    expect(page.locator(".job-head")).not_to_contain_text("device null")
    origin.locator("a").click()
    page.wait_for_url(re.compile(rf"#/jobs/{job_id}$"))
