"""A worker stores each round's churn and class sizes in the round events, and a job that
stopped early says why in its final status event (stop_when_churn_below)."""

from __future__ import annotations

import json

import pytest
from support.api import read_sse, upload, wait_for_job

pytestmark = pytest.mark.slow  # a real worker process

# Churn is below 1 in every round (classes are matched one to one, so the largest one is always
# kept): a threshold of 1 stops after round 1 of 3.
INPUTS = {
    "method": "invariant",
    "cluster_num": 3,
    "round_num": 3,
    "size": 32,
    "stop_when_churn_below": 1.0,
    "umap": False,  # numba would compile umap in each fresh worker (tens of seconds)
}


def test_a_job_that_stops_early_says_why_and_its_rounds_carry_churn(api, workers, stack_file):
    worker = workers(api.settings)
    with api.client() as client:
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, **INPUTS})
        assert response.status_code == 201, response.text
        job = wait_for_job(client, response.json()["id"], timeout=180)
        assert job["status"] == "succeeded", (job, worker.tail())
        assert client.get(f"/api/jobs/{job['id']}/rounds").json() == [1]
        events = read_sse(client, f"/api/jobs/{job['id']}/events")
    rounds = [json.loads(e["data"]) for e in events if e["event"] == "round"]
    assert [r["round"] for r in rounds] == [1]
    assert 0.0 <= rounds[0]["churn"] < 1.0 and sum(rounds[0]["counts"]) == 60  # the stack's particles
    final = [json.loads(e["data"]) for e in events if e["event"] == "status"][-1]
    assert final["status"] == "succeeded"
    assert final["message"] == f"stopped: churn {rounds[0]['churn']:.3g} < 1 after round 1"
