"""End to end with real processes: the real Redis and real `celery worker` processes run tiny
jobs to success (events read over SSE, in order), a cancel stops a running job, and a worker
killed mid-job leaves a job that another worker finishes from its last complete round."""

from __future__ import annotations

import io
import json
import signal
import sys
import time
import zipfile

import httpx
import mrcfile
import pytest
from support.api import read_sse, running_api, upload, wait_for_job
from support.databases import REDIS_URL
from support.net import require_port
from support.processes import ServeProcess
from support.settings import child_env, make_settings
from support.stacks import write_stack

TINY = {
    "cluster_num": 3,
    "epoch_num": 1,
    "round_num": 1,
    "batch_size": 16,
    "size": 32,
    "device": "cpu",
    "umap": False,
}


def celery_command(settings, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "cryoclust.core.celery_app",
        "worker",
        "-Q",
        settings.QUEUE,
        "--pool",
        "solo",
        "-c",
        "1",
        "--without-mingle",
        "--without-gossip",
        "-n",
        f"{name}@%h",
        "--loglevel",
        "INFO",
    ]


@pytest.fixture
def redis_settings(tmp_path, db_url):
    """The shared Redis as broker; SQLite or PostgreSQL (db_url runs each test on both)."""
    require_port(6379, "Redis")
    return make_settings(
        tmp_path / "data",
        BROKER_URL=REDIS_URL,
        DATABASE_URL=db_url,
        HEARTBEAT_SECONDS=1.0,
        STALE_AFTER_SECONDS=4.0,
    )


def check_results(client, job_id: str, n: int, folder) -> None:
    """Every result endpoint and download of a finished one-round job."""
    assert client.get(f"/api/jobs/{job_id}/rounds").json() == [1]
    embedding = client.get(f"/api/jobs/{job_id}/rounds/1/embedding").json()
    assert len(embedding["x"]) == len(embedding["y"]) == len(embedding["labels"]) == n
    assert set(embedding["labels"]) <= {1, 2, 3}
    classes = client.get(f"/api/jobs/{job_id}/rounds/final/classes").json()
    assert [c["class"] for c in classes] == [1, 2, 3] and sum(c["count"] for c in classes) == n
    members = client.get(f"/api/jobs/{job_id}/rounds/final/classes/1/members", params={"limit": 1000}).json()
    assert members["total"] == classes[0]["count"] == len(members["indices"])
    assert all(embedding["labels"][i] == 1 for i in members["indices"])
    loss = client.get(f"/api/jobs/{job_id}/loss").json()
    assert [r["round"] for r in loss["rounds"]] == [1] and loss["rounds"][0]["points"]

    average = client.get(f"/api/jobs/{job_id}/rounds/final/classes/2/average.png")
    assert average.status_code == 200 and average.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/api/jobs/{job_id}/rounds/final/classes/4/average.png").status_code == 422
    averages = folder / "averages.mrcs"
    averages.write_bytes(client.get(f"/api/jobs/{job_id}/rounds/1/class_averages.mrcs").content)
    with mrcfile.open(averages, permissive=False) as mrc:
        assert mrc.data.shape[0] == 3
    assert mrcfile.validate(averages, print_file=io.StringIO())
    assert client.get(f"/api/jobs/{job_id}/rounds/1/class_averages.png").content[:4] == b"\x89PNG"
    labels = client.get(f"/api/jobs/{job_id}/rounds/final/labels.csv").text.splitlines()
    assert labels[0] == "index,image_name,class" and len(labels) == n + 1
    star = client.get(f"/api/jobs/{job_id}/particles.star").text
    assert "_rlnClassNumber" in star and "_rlnImageName" in star
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/jobs/{job_id}/rounds/final/archive.zip").content))
    assert {"job", "labels.csv", "classes.json", "class_averages.mrcs"} - {
        n.split("/")[-1] for n in archive.namelist()
    } == {"job"}

    chosen = client.post(
        f"/api/jobs/{job_id}/subset", json={"round": "final", "classes": [1], "format": "star"}
    )
    assert chosen.status_code == 200 and "attachment" in chosen.headers["content-disposition"]
    rows = [line for line in chosen.text.splitlines() if "@particles.mrcs" in line]
    assert len(rows) == members["total"]
    subset = folder / "subset.mrcs"
    subset.write_bytes(
        client.post(
            f"/api/jobs/{job_id}/subset", json={"round": 1, "classes": [1, 2], "format": "mrcs"}
        ).content
    )
    with mrcfile.open(subset) as mrc:
        assert mrc.data.shape == (classes[0]["count"] + classes[1]["count"], 32, 32)
    assert client.post(f"/api/jobs/{job_id}/subset", json={"classes": [9]}).status_code == 422
    assert client.get(f"/api/jobs/{job_id}/rounds/2/embedding").status_code == 404


def test_redis_worker_runs_a_job_streams_events_and_cancels(redis_settings, workers, stack_file, tmp_path):
    worker = workers(redis_settings, celery_command(redis_settings, "e2e"))
    with running_api(redis_settings) as api, api.client() as client:
        dataset_id = upload(client, stack_file).json()["id"]
        job = client.post("/api/jobs", json={"dataset_id": dataset_id, **TINY}).json()
        events = read_sse(client, f"/api/jobs/{job['id']}/events")
        kinds = [e["event"] for e in events]
        assert kinds[:2] == ["status", "status"], (kinds, worker.tail())
        assert kinds[-3:] == ["round", "status", "end"], (kinds, worker.tail())
        assert "loss" in kinds and "epoch" in kinds
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(set(ids))
        data = [json.loads(e["data"]) for e in events]
        # Preprocessing and the initial labels report progress before the round starts.
        first_round = kinds.index("round_started")
        assert set(kinds[2:first_round]) == {"stage"}, kinds
        stages = [d for d, k in zip(data, kinds) if k == "stage"]
        for name in ("preprocess", "initial labels"):
            last = [d for d in stages if d["stage"] == name][-1]
            assert last["round"] == 0 and last["done"] == last["total"] == 60, stages
        assert data[first_round]["epochs"] == TINY["epoch_num"]  # pose: epoch_num, at most 5
        assert [d["status"] for d, k in zip(data, kinds) if k == "status"] == [
            "queued",
            "running",
            "succeeded",
        ]
        loss = next(d for d, k in zip(data, kinds) if k == "loss")
        assert set(loss) == {"round", "epoch", "step", "pairs_done", "loss"} and loss["round"] == 1
        summary = next(d for d, k in zip(data, kinds) if k == "round")
        assert summary["round"] == 1 and sum(summary["counts"]) == 60

        done = client.get(f"/api/jobs/{job['id']}").json()
        assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["rounds_done"] == 1
        assert done["device"] == "cpu" and done["worker"].startswith("e2e@") and done["error"] is None
        assert done["started_at"] <= done["finished_at"]
        assert any(w.startswith("e2e@") for w in client.get("/api/health").json()["workers"])
        check_results(client, job["id"], 60, tmp_path)

        # A long job, cancelled once it trains: it stops within seconds.
        long = client.post(
            "/api/jobs", json={"dataset_id": dataset_id, **TINY, "method": "reference", "epoch_num": 1000}
        ).json()
        deadline = time.monotonic() + 60
        while not client.get(f"/api/jobs/{long['id']}/loss").json()["rounds"]:
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.1)
        asked = time.monotonic()
        assert client.post(f"/api/jobs/{long['id']}/cancel").json()["status"] == "running"
        cancelled = wait_for_job(client, long["id"], timeout=30)
        assert cancelled["status"] == "cancelled"
        assert time.monotonic() - asked < 5
        tail = read_sse(client, f"/api/jobs/{long['id']}/events")[-2:]
        assert [e["event"] for e in tail] == ["status", "end"]
        assert json.loads(tail[0]["data"])["status"] == "cancelled"

        # Delete removes the results.
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
        assert not (api.data_dir / "jobs" / job["id"]).exists()
    worker.stop()


def test_killed_worker_job_resumes_on_a_new_worker(redis_settings, workers, tmp_path):
    stack = write_stack(tmp_path / "kill" / "particles.mrcs", n=60, box=32)
    params = {**TINY, "round_num": 3, "epoch_num": 2, "batch_size": 64}
    first = workers(redis_settings)
    with running_api(redis_settings) as api, api.client() as client:
        dataset_id = upload(client, stack).json()["id"]
        job = client.post("/api/jobs", json={"dataset_id": dataset_id, **params}).json()
        out = api.data_dir / "jobs" / job["id"]
        deadline = time.monotonic() + 90
        # rounds_done is recorded just after round_01/ is renamed into place: wait for it.
        while client.get(f"/api/jobs/{job['id']}").json()["rounds_done"] < 1:
            assert time.monotonic() < deadline, first.tail()
            assert client.get(f"/api/jobs/{job['id']}").json()["status"] != "succeeded", "too fast to kill"
            time.sleep(0.05)
        first.kill()
        round_one = (out / "round_01" / "labels.csv").stat()
        killed = client.get(f"/api/jobs/{job['id']}").json()
        assert killed["status"] == "running" and killed["rounds_done"] >= 1
        done_before = killed["rounds_done"]
        assert done_before < 3

        second = workers(redis_settings)
        finished = wait_for_job(client, job["id"], timeout=120)
        assert finished["status"] == "succeeded", (finished, second.tail())
        assert finished["attempts"] == 2 and finished["rounds_done"] == 3
        assert client.get(f"/api/jobs/{job['id']}/rounds").json() == [1, 2, 3]
        # Round 1 was not redone: its files are the ones written before the kill.
        after = (out / "round_01" / "labels.csv").stat()
        assert (after.st_ino, after.st_mtime_ns) == (round_one.st_ino, round_one.st_mtime_ns)
        events = read_sse(client, f"/api/jobs/{job['id']}/events")
        data = [(e["event"], json.loads(e["data"])) for e in events]
        second_run = next(
            i for i, (k, d) in enumerate(data) if k == "status" and "attempt 2" in d.get("message", "")
        )
        assert any("lost" in d.get("message", "") for k, d in data[:second_run] if k == "status")
        restarted = [d["round"] for k, d in data[second_run:] if k == "round_started"]
        assert restarted and restarted[0] > 1 and restarted[-1] == 3
        assert data[-1][0] == "end"
    second.stop()


def serve_with_worker(tmp_path, db_url: str) -> ServeProcess:
    """`cryoclust serve` on the embedded filesystem broker, with its own worker, on `db_url`."""
    settings = make_settings(tmp_path / "data", DATABASE_URL=db_url)
    return ServeProcess(child_env(settings), tmp_path, "--data-dir", str(settings.data_dir))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # with the filesystem queue, as `make run`
def test_filesystem_broker_end_to_end_with_cryoclust_serve(tmp_path, db_url):
    """`cryoclust serve` with no Redis runs a job with its own worker; Ctrl-C mid-job gives the
    job back to the queue and the next start finishes it from its last complete round."""
    serve = serve_with_worker(tmp_path, db_url)

    def has_worker(health: dict) -> bool:
        return bool(health["workers"])

    try:
        health = serve.start(has_worker, timeout=60)
        assert health["broker"] == "ok" and health["database"] == "ok"
        assert "listening on 127.0.0.1 only" in serve.logs()
        with httpx.Client(base_url=serve.url, timeout=60) as client:
            stack = write_stack(tmp_path / "fs" / "particles.mrcs", n=40, box=32)
            dataset_id = upload(client, stack).json()["id"]
            # the reference method trains every epoch asked for: still running at Ctrl-C
            params = {**TINY, "method": "reference", "epoch_num": 100, "batch_size": 64}
            job = client.post("/api/jobs", json={"dataset_id": dataset_id, **params}).json()
            deadline = time.monotonic() + 60
            while not client.get(f"/api/jobs/{job['id']}/loss").json()["rounds"]:
                assert time.monotonic() < deadline, serve.logs()
                time.sleep(0.1)
        serve.process.process.send_signal(signal.SIGINT)
        assert serve.process.process.wait(40) == 0, serve.logs()
        assert "Traceback" not in serve.logs()
        data = tmp_path / "data"
        assert (data / "cryoclust.db").is_file() == (db_url == "")
        assert list((data / "broker" / "queue").iterdir())

        serve.start(has_worker, timeout=60)
        with httpx.Client(base_url=serve.url, timeout=60) as client:
            stopped = [
                json.loads(e["data"])
                for e in read_sse(client, f"/api/jobs/{job['id']}/events")
                if e["event"] == "status"
            ]
            assert any("stopped; requeued" in d.get("message", "") for d in stopped), stopped
            finished = client.get(f"/api/jobs/{job['id']}").json()
            # A worker asked to stop does not count as a lost attempt.
            assert finished["status"] == "succeeded" and finished["attempts"] == 1, finished
            assert client.get(f"/api/jobs/{job['id']}/rounds").json() == [1]
        serve.process.process.send_signal(signal.SIGINT)
        assert serve.process.process.wait(30) == 0, serve.logs()
    finally:
        serve.kill()
