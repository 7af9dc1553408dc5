"""A job of 0 rounds (the API takes round_num 0, its schema generated from PARAMETERS) runs on a
real worker and serves its initial classes as round 0: embedding, classes, averages, labels."""

from __future__ import annotations

import json

import pytest
from support.api import read_sse, upload, wait_for_job

pytestmark = pytest.mark.slow  # a real worker process


def test_a_job_of_zero_rounds_serves_round_zero(api, workers, stack_file):
    worker = workers(api.settings)
    with api.client() as client:
        minimum = {p["name"]: p["minimum"] for p in client.get("/api/parameters").json()}["round_num"]
        assert minimum == 0
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post(
            "/api/jobs",
            json={"dataset_id": dataset_id, "cluster_num": 3, "round_num": 0, "size": 32, "umap": False},
        )
        assert response.status_code == 201, response.text
        job = wait_for_job(client, response.json()["id"], timeout=120, logs=[worker])
        assert job["status"] == "succeeded", (job, worker.tail())
        assert job["round_num"] == 0 and job["progress"] == 1.0
        assert client.get(f"/api/jobs/{job['id']}/rounds").json() == [0]
        embedding = client.get(f"/api/jobs/{job['id']}/rounds/0/embedding").json()
        assert len(embedding["x"]) == len(embedding["labels"]) == 60 and set(embedding["labels"]) == {1, 2, 3}
        classes = client.get(f"/api/jobs/{job['id']}/rounds/final/classes").json()
        assert [c["class"] for c in classes] == [1, 2, 3] and sum(c["count"] for c in classes) == 60
        png = client.get(f"/api/jobs/{job['id']}/rounds/0/classes/1/average.png")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        labels = client.get(f"/api/jobs/{job['id']}/rounds/final/labels.csv").text.splitlines()
        assert len(labels) == 61
        rounds = [
            json.loads(e["data"])
            for e in read_sse(client, f"/api/jobs/{job['id']}/events")
            if e["event"] == "round"
        ]
        assert [(r["round"], r["churn"], r["loss"]) for r in rounds] == [(0, None, None)]
    assert "Traceback" not in worker.tail(20000)
