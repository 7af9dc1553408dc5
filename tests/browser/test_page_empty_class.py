"""The class given to boxes that look empty (ice with no particle) is marked in the gallery, as
the API's classes say, so a scientist can leave it out of a subset at a glance."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from support.api import upload_id, wait_for_job

from cryoclust.client import Client
from worker.engine.simulate import simulate, write_simulation

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# A quarter of the boxes junk, a fifth of that empty ice: enough flagged boxes for a class
# (worker.engine.empty_boxes); the pose methods make it in the last round.
JOB = {"method": "pose-em", "cluster_num": 4, "round_num": 1, "size": 32, "device": "cpu", "umap": False}


def test_the_empty_class_is_marked_in_the_gallery(page, server, tmp_path):
    sim = simulate(
        n=600, k=3, box=32, snr=0.1, rotate=True, shift=2.0, ctf=True, pixel_size=4.0, seed=11, junk=0.25
    )
    paths = write_simulation(sim, tmp_path / "data")
    with server.client() as client:
        dataset = upload_id(client, paths["star"], paths["particles"])
        job_id = client.post("/api/jobs", json={"dataset_id": dataset, **JOB}).json()["id"]
        assert wait_for_job(client, job_id, timeout=180)["status"] == "succeeded"
        classes = client.get(f"/api/jobs/{job_id}/rounds/final/classes").json()
    empty = [c["class"] for c in classes if c["empty"]]
    assert len(empty) == 1, classes
    with Client(server.url, server.token) as cc:  # the Python client reads the same flag
        assert [c.number for c in cc.classes(job_id) if c.empty] == empty

    page.goto(f"{server.url}/#/jobs/{job_id}")
    expect(page.locator("#gallery-grid .class-card")).to_have_count(4)
    marked = page.locator("#gallery-grid .class-card:has(.badge.empty-boxes)")
    expect(marked).to_have_count(1)
    expect(marked).to_have_attribute("data-cls", str(empty[0]))
    expect(marked.locator(".badge.empty-boxes")).to_have_text("empty boxes")
