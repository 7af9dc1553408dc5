"""A queued job too large for its worker's memory fails at once, with the fit check's one line
as its error (the worker's memory lowered by CRYOCLUST_MEMORY_LIMIT_BYTES)."""

from __future__ import annotations

import re

import pytest
from support.api import upload, wait_for_job

pytestmark = pytest.mark.slow  # a real worker process


def test_a_job_that_cannot_fit_fails_with_one_line(api, workers, stack_file, monkeypatch):
    monkeypatch.setenv("CRYOCLUST_MEMORY_LIMIT_BYTES", str(2**29))  # the worker inherits it
    worker = workers(api.settings)
    with api.client() as client:
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, "cluster_num": 3, "size": 32})
        assert response.status_code == 201, response.text
        job = wait_for_job(client, response.json()["id"], timeout=120, logs=[worker])
        assert job["status"] == "failed", (job, worker.tail())
        assert re.fullmatch(
            r"60 particles at 32 px need \d+\.\d GiB, this machine has 0\.5 GiB available; "
            r"try a subset of the particles or a machine with more memory",
            job["error"],
        ), job["error"]
        assert client.get(f"/api/jobs/{job['id']}/rounds").json() == []
