"""Jobs API on real SQLite and PostgreSQL (no worker: jobs stay queued), the event stream of a
job cancelled while queued, access with a token, CORS, health, the page routes, and the API
process staying free of torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.api import read_sse, running_api, upload
from support.settings import make_settings


@pytest.fixture
def dataset_id(api, stack_file) -> str:
    with api.client() as client:
        return upload(client, stack_file).json()["id"]


def test_create_list_get_cancel_delete(api, dataset_id):
    with api.client() as client:
        response = client.post(
            "/api/jobs", json={"dataset_id": dataset_id, "cluster_num": 3, "epoch_num": 2, "round_num": 2}
        )
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["status"] == "queued" and job["round_num"] == 2 and job["progress"] == 0
        assert job["params"]["cluster_num"] == 3 and job["params"]["learning_rate"] == 5e-4
        assert job["params"]["method"] == "pose" and job["params"]["batch_size"] == 128
        # The task went to the broker: the filesystem queue holds one message.
        queue = api.data_dir / "broker" / "queue"
        assert len(list(queue.iterdir())) == 1

        assert [j["id"] for j in client.get("/api/jobs", params={"status": "queued"}).json()] == [job["id"]]
        assert client.get("/api/jobs", params={"status": "running"}).json() == []
        assert [j["id"] for j in client.get("/api/jobs", params={"dataset_id": dataset_id}).json()] == [
            job["id"]
        ]
        assert client.get("/api/jobs", params={"dataset_id": "nope"}).json() == []
        assert client.get("/api/jobs", params={"status": "bogus"}).status_code == 422

        # Deleting a dataset or a job that is still queued is refused.
        assert client.delete(f"/api/datasets/{dataset_id}").status_code == 409
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 409

        cancelled = client.post(f"/api/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
        events = read_sse(client, f"/api/jobs/{job['id']}/events")
        assert [e["event"] for e in events] == ["status", "status", "end"]
        assert [json.loads(e["data"])["status"] for e in events] == ["queued", "cancelled", "cancelled"]
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == 3

        # Resume after the first event: the header and the query parameter both work.
        resumed = read_sse(client, f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": str(ids[0])})
        assert [int(e["id"]) for e in resumed] == ids[1:]
        resumed = read_sse(client, f"/api/jobs/{job['id']}/events?last_event_id={ids[1]}")
        assert [int(e["id"]) for e in resumed] == ids[2:]

        assert client.get(f"/api/jobs/{job['id']}/rounds").json() == []
        assert client.get(f"/api/jobs/{job['id']}/rounds/final/classes").status_code == 404
        assert client.get(f"/api/jobs/{job['id']}/particles.star").status_code == 404

        assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
        assert client.get(f"/api/jobs/{job['id']}").status_code == 404
        assert client.get(f"/api/jobs/{job['id']}/events").status_code == 404
        assert client.delete(f"/api/datasets/{dataset_id}").status_code == 204


BAD_PARAMS = {
    "too-many-classes": ({"cluster_num": 61}, "61"),
    "one-class": ({"cluster_num": 1}, "cluster_num"),
    "zero-learning-rate": ({"learning_rate": 0}, "learning_rate"),
    "odd-size": ({"size": 63}, "multiple of 2"),
    "unknown-method": ({"method": "magic"}, "method"),
    "unknown-field": ({"colour": "red"}, "colour"),
    "bad-device": ({"device": "tpu:0; rm -rf /"}, "device"),
    "string-epochs": ({"epoch_num": "many"}, "epoch_num"),
    "negative-rounds": ({"round_num": -1}, "round_num"),
    "unknown-storage": ({"storage": "float8"}, "storage"),
}


@pytest.mark.parametrize("case", BAD_PARAMS, ids=list(BAD_PARAMS))
def test_bad_job_parameters_get_a_clear_422(sqlite_api, stack_file, case):
    params, words = BAD_PARAMS[case]
    with sqlite_api.client() as client:
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, **params})
        assert response.status_code == 422, response.text
        assert words in json.dumps(response.json()["detail"])
        assert client.get("/api/jobs").json() == []


def test_job_for_a_missing_dataset(sqlite_api):
    with sqlite_api.client() as client:
        response = client.post("/api/jobs", json={"dataset_id": "nope"})
        assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_token_is_required_when_set(tmp_path, stack_file):
    settings = make_settings(tmp_path / "data", API_TOKEN="s3cret-token")
    with running_api(settings) as api:
        with api.client() as client:
            assert client.get("/api/health").status_code == 200
            dataset_id = upload(client, stack_file).json()["id"]
        with api.client() as anonymous:
            anonymous.headers.pop("Authorization", None)
            for path in (
                "/api/health",
                "/api/datasets",
                f"/api/datasets/{dataset_id}/particles/0.png",
                "/api/jobs",
            ):
                response = anonymous.get(path)
                assert response.status_code == 401, path
                assert response.headers["www-authenticate"] == "Bearer"
            assert (
                anonymous.get("/api/datasets", headers={"Authorization": "Bearer wrong"}).status_code == 401
            )
            assert upload(anonymous, stack_file).status_code == 401
            # A token in a URL opens nothing (it would land in histories and logs); the page
            # signs in once and carries an HttpOnly session cookie instead.
            assert (
                anonymous.get(f"/api/datasets/{dataset_id}/particles/0.png?token=s3cret-token").status_code
                == 401
            )
            assert anonymous.post("/api/session", json={"token": "nope"}).status_code == 401
            signed_in = anonymous.post("/api/session", json={"token": "s3cret-token"})
            assert signed_in.status_code == 200 and "s3cret-token" not in signed_in.headers["set-cookie"]
            cookie = signed_in.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "path=/api" in cookie
            assert anonymous.get(f"/api/datasets/{dataset_id}/particles/0.png").status_code == 200
            assert anonymous.get("/api/session").json() == {"signed_in": True, "token_required": True}
            # A change by cookie needs this server's Origin (CSRF).
            foreign = anonymous.delete(
                f"/api/datasets/{dataset_id}", headers={"Origin": "http://evil.example"}
            )
            assert foreign.status_code == 403
            assert anonymous.delete("/api/session").status_code == 204
            anonymous.cookies.clear()  # what the browser does with the expired cookie
            assert anonymous.get("/api/datasets").status_code == 401
            # The page itself loads without a token (it asks for one).
            assert anonymous.get("/vendor/plotly.min.js").status_code == 200
    assert list((settings.data_dir / "tmp").iterdir()) == []


def test_cors_is_closed_by_default_and_configurable(tmp_path):
    origin = {"Origin": "http://elsewhere.example"}
    with running_api(make_settings(tmp_path / "a")) as api, api.client() as client:
        assert "access-control-allow-origin" not in client.get("/api/health", headers=origin).headers
    settings = make_settings(tmp_path / "b", CORS_ORIGINS="http://elsewhere.example, http://other.example")
    with running_api(settings) as api, api.client() as client:
        headers = client.get("/api/health", headers=origin).headers
        assert headers["access-control-allow-origin"] == "http://elsewhere.example"
        stranger = client.get("/api/health", headers={"Origin": "http://evil.example"}).headers
        assert "access-control-allow-origin" not in stranger


def test_health_reports_database_and_broker(api):
    with api.client() as client:
        health = client.get("/api/health").json()
    assert health == {"status": "ok", "database": "ok", "broker": "ok", "workers": []}


def test_redis_down_is_reported_and_jobs_are_refused(tmp_path, stack_file):
    settings = make_settings(tmp_path / "data", BROKER_URL="redis://127.0.0.1:1/0")
    with running_api(settings) as api, api.client() as client:
        health = client.get("/api/health").json()
        assert health["status"] == "degraded" and health["broker"].startswith("error")
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, "cluster_num": 2})
        assert response.status_code == 503 and "queue" in response.json()["detail"]
        assert client.get("/api/jobs").json() == []


def test_page_and_plotly_are_served(sqlite_api, tmp_path):
    with sqlite_api.client() as client:
        plotly = client.get("/vendor/plotly.min.js")
        assert plotly.status_code == 200 and "javascript" in plotly.headers["content-type"]
        assert len(plotly.content) > 1_000_000
        # The page of this source tree, byte for byte, and one of its scripts.
        frontend = Path(__file__).resolve().parents[2] / "frontend"
        assert sqlite_api.settings.FRONTEND_DIR.resolve() == frontend
        index = client.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert index.content == (frontend / "index.html").read_bytes()
        script = client.get("/static/js/api.js")
        assert script.status_code == 200 and script.content == (frontend / "js" / "api.js").read_bytes()
        assert client.get("/static/../backend/app.py").status_code == 404
        assert client.get("/static/%2e%2e/pyproject.toml").status_code == 404
        spec = client.get("/openapi.json").json()
        assert "/api/jobs/{job_id}/events" in spec["paths"]
        assert "multipart/form-data" in spec["paths"]["/api/datasets"]["post"]["requestBody"]["content"]


def test_backend_never_imports_torch(tmp_path):
    code = (
        "import sys, backend.app, backend.serve, backend.routes.downloads, cryoclust.core.celery_app\n"
        "from backend.app import create_app\n"
        "create_app()\n"
        "assert 'torch' not in sys.modules, 'the API imported torch'\n"
        "assert 'umap' not in sys.modules and 'numba' not in sys.modules, 'the API imported umap'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    # worker/__init__ must stay free of celery (the engine imports the package).
    subprocess.run(
        [sys.executable, "-c", "import sys, worker; assert 'celery' not in sys.modules"], check=True
    )
