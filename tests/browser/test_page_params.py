"""The same job from the page, from REST and from the command line records the same effective
parameters: every "auto" decided by one rule, defaults from one definition."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from cryoclust.cli import main
from worker.engine.config import BY_NAME, PARAMETERS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Small and quick; everything else (method, device, phase flip, aligned averages ...) is left
# to its default, which is where the page, the API and the CLI used to disagree.
INPUTS = {"cluster_num": 4, "epoch_num": 2, "round_num": 2, "batch_size": 32, "size": 32, "seed": 3}
CLI_FLAGS = {
    "cluster_num": "-c",
    "epoch_num": "-e",
    "round_num": "-r",
    "batch_size": "-b",
    "size": "--size",
    "seed": "--seed",
}
# UMAP off in all three (numba compiles it once per worker; the embedding tests have it).
NO_UMAP = {"umap": False}


def wait_done(client, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def test_page_rest_and_cli_record_identical_effective_parameters(page, server, sim_stack, tmp_path):
    with server.client() as client:
        response = client.post(
            "/api/datasets",
            files={"files": ("same.mrcs", sim_stack.mrcs.read_bytes())},
            data={"name": "same inputs"},
        )
        assert response.status_code == 201, response.text
        dataset_id = response.json()["id"]

        page.goto(server.url)
        page.select_option("#job-dataset", dataset_id)
        for field, value in INPUTS.items():
            page.fill(f"#job-{field}", str(value))
        page.set_checked("#job-umap", False)
        page.click("#job-form button[type=submit]")
        page.wait_for_url(re.compile(r"#/jobs/\w+$"))
        from_page = page.url.rsplit("/", 1)[1]
        expect(page.locator(".job-head .badge")).to_have_text("succeeded", timeout=180_000)
        # The job view shows what the worker really ran with: no "auto" left, the real device.
        shown = page.locator("p.params")
        expect(shown).to_contain_text("device cpu")
        expect(shown).not_to_contain_text("auto")

        response = client.post("/api/jobs", json={"dataset_id": dataset_id, **INPUTS, **NO_UMAP})
        assert response.status_code == 201, response.text
        from_rest = response.json()["id"]
        page_job, rest_job = wait_done(client, from_page), wait_done(client, from_rest)

    out = tmp_path / "cli"
    argv = ["classify", str(sim_stack.mrcs), "-o", str(out), "-q", "--no-umap"]
    for field, value in INPUTS.items():
        argv += [CLI_FLAGS[field], str(value)]
    assert main(argv) == 0
    from_cli = json.loads((out / "config.json").read_text())["parameters"]

    assert page_job["status"] == rest_job["status"] == "succeeded", (page_job, rest_job)
    effective = page_job["effective_params"]
    assert set(effective) == {p.name for p in PARAMETERS}
    assert None not in effective.values(), "an auto parameter was left undecided"
    assert effective == rest_job["effective_params"] == from_cli
    # What each worker run wrote into its own folder is what the job row says.
    for job in (page_job, rest_job):
        written = json.loads((server.data_dir / "jobs" / job["id"] / "config.json").read_text())["parameters"]
        assert written == effective
    # The page and REST asked for the same thing too: the form sends auto as null.
    assert page_job["params"] == rest_job["params"]
    assert page_job["params"]["phase_flip"] is None
    assert effective["phase_flip"] == BY_NAME["phase_flip"].resolve(effective)
    assert effective["device"] == "cpu" and {k: effective[k] for k in INPUTS} == INPUTS
    assert effective["umap"] is False
