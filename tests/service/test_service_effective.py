"""A worker records the effective parameters of a job (every auto decided, the device it got)
in the job row and in the job's config.json, on SQLite and PostgreSQL, and they equal what
`cryoclust classify` records for the same inputs."""

from __future__ import annotations

import json

import pytest
from support.api import upload, wait_for_job

from cryoclust.cli import main
from worker.engine.config import PARAMETERS

pytestmark = pytest.mark.slow  # a real worker process per database

# Method invariant: its auto options come out on, where the reference method's come out off.
INPUTS = {
    "method": "invariant",
    "cluster_num": 3,
    "epoch_num": 1,
    "round_num": 1,
    "batch_size": 16,
    "size": 32,
    "umap": False,  # numba would compile umap in each fresh worker (tens of seconds)
}
FLAGS = {
    "method": "--method",
    "cluster_num": "-c",
    "epoch_num": "-e",
    "round_num": "-r",
    "batch_size": "-b",
    "size": "--size",
}


def test_worker_records_effective_parameters_equal_to_the_clis(api, workers, stack_file, tmp_path):
    worker = workers(api.settings)
    with api.client() as client:
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, **INPUTS})
        assert response.status_code == 201, response.text
        asked = response.json()
        assert asked["effective_params"] is None and asked["params"]["phase_flip"] is None
        job = wait_for_job(client, asked["id"], timeout=180)
    assert job["status"] == "succeeded", (job, worker.tail())
    effective = job["effective_params"]
    assert set(effective) == {p.name for p in PARAMETERS}
    assert (effective["phase_flip"], effective["align_averages"], effective["device"]) == (True, True, "cpu")
    assert job["params"] == asked["params"], "the parameters as asked for stay as they were"
    written = json.loads((api.data_dir / "jobs" / job["id"] / "config.json").read_text())["parameters"]
    assert written == effective

    argv = ["classify", str(stack_file), "-o", str(tmp_path / "cli"), "-q"]
    for name, value in INPUTS.items():
        argv += (
            [f"--{'' if value else 'no-'}{name}"] if isinstance(value, bool) else [FLAGS[name], str(value)]
        )
    assert main(argv) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["parameters"] == effective
