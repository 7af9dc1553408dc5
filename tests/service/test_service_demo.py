"""`cryoclust serve --demo`: on first start a realistic simulated dataset (with its CTF) and a
queued job on it with the default method; nothing more on later starts."""

from __future__ import annotations

from backend.serve import DEMO_PARTICLES, DEMO_VIEWS, make_demo
from worker.engine.config import DEFAULT_METHOD, PARAMETERS


def test_demo_adds_a_realistic_dataset_and_queues_one_default_job_once(sqlite_api):
    created = make_demo(sqlite_api.app)
    assert created is not None
    dataset_id, job_id = created
    with sqlite_api.client() as client:
        dataset = client.get(f"/api/datasets/{dataset_id}").json()
        job = client.get(f"/api/jobs/{job_id}").json()
        assert dataset["n_particles"] == DEMO_PARTICLES and dataset["box_size"] == 64
        assert dataset["has_ctf"] is True  # the .star with the simulated defocus came along
        assert dataset["pixel_size"] == 2.0
        assert "SNR 0.1" in dataset["name"]
        assert job["dataset_id"] == dataset_id and job["status"] == "queued"
        # the default method and parameters, with one class per simulated view
        defaults = {p.name: p.default for p in PARAMETERS}
        assert job["params"]["method"] == DEFAULT_METHOD
        assert job["params"]["cluster_num"] == DEMO_VIEWS
        assert {k: v for k, v in job["params"].items() if k not in ("cluster_num", "round_num")} == {
            k: v for k, v in defaults.items() if k not in ("cluster_num", "round_num")
        }
        # a second start finds the mark and adds nothing
        assert make_demo(sqlite_api.app) is None
        assert len(client.get("/api/datasets").json()) == 1
        assert len(client.get("/api/jobs").json()) == 1
