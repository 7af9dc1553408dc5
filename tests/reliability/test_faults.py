"""Faults end to end with real processes: a private redis-server killed and restarted under a
running job, a worker lost together with its queued message (the stale-job reaper requeues the
job), the API restarted under a client following the event stream, and the disk filling up
while rounds are written (a real tmpfs mounted over DATA_DIR/jobs).

The shared Redis on 127.0.0.1:6379 is left alone: each test that kills Redis starts its own on a
free port with no persistence (--save ''), so a restart really loses what was queued.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mrcfile
import pytest
from support.api import parse_sse, running_api, upload_id, wait_for_job
from support.processes import RedisServer, ServeProcess, start_worker
from support.settings import child_env, make_settings
from support.stacks import write_stack

pytestmark = pytest.mark.slow

JOB = {"cluster_num": 3, "size": 16, "batch_size": 32, "device": "cpu", "learning_rate": 1e-3, "umap": False}
ROUND_FILES = {
    "labels.csv",
    "embedding.npy",
    "embedding_2d.npy",
    "class_averages.mrcs",
    "class_averages.png",
    "classes.json",
    "loss.json",
    "round.json",
}


@pytest.fixture
def stack(tmp_path) -> Path:
    return write_stack(tmp_path / "in" / "particles.mrcs", n=90, box=16)


def create_job(client: httpx.Client, dataset_id: str, **params) -> str:
    response = client.post("/api/jobs", json={"dataset_id": dataset_id, **JOB, **params})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_until(client: httpx.Client, job_id: str, test, what: str, timeout: float = 90, workers=()) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if test(job):
            return job
        if time.monotonic() > deadline:
            logs = "\n".join(w.tail(1500) for w in workers)
            raise AssertionError(f"job {job_id}: not {what} after {timeout} s: {job}\n{logs}")
        time.sleep(0.1)


def all_events(client: httpx.Client, job_id: str) -> list[dict]:
    with client.stream("GET", f"/api/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200
        return [
            {"id": int(e["id"]), "event": e["event"], "data": json.loads(e["data"])}
            for e in parse_sse(response.iter_lines())
        ]


def assert_round_complete(folder: Path, n: int) -> None:
    assert ROUND_FILES <= {p.name for p in folder.iterdir()}, sorted(p.name for p in folder.iterdir())
    lines = (folder / "labels.csv").read_text().splitlines()
    assert lines[0] == "index,image_name,class" and len(lines) == n + 1
    with open(os.devnull, "w") as sink:
        assert mrcfile.validate(str(folder / "class_averages.mrcs"), print_file=sink)
    json.loads((folder / "classes.json").read_text())


# ----------------------------------------------------------------------------- Redis restarted


def test_redis_restarted_under_a_running_job(tmp_path, db_url, stack):
    """The running job finishes; the worker and the API reconnect and the next job runs too."""
    with RedisServer(tmp_path / "redis") as redis:
        settings = make_settings(tmp_path / "data", BROKER_URL=redis.url, DATABASE_URL=db_url)
        with running_api(settings) as api, api.client() as client:
            w = start_worker(settings, tmp_path / "worker.log", "redis-restart")
            try:
                dataset_id = upload_id(client, stack)
                job_id = create_job(client, dataset_id, epoch_num=4, round_num=8)
                wait_until(client, job_id, lambda j: j["status"] == "running", "running", workers=[w])
                redis.kill()
                assert client.get(f"/api/jobs/{job_id}").json()["status"] == "running"
                time.sleep(1.0)
                redis.start()
                job = wait_for_job(client, job_id, timeout=120)
                assert job["status"] == "succeeded", (job, w.tail())
                assert job["rounds_done"] == 8 and job["progress"] == 1.0 and job["attempts"] == 1
                # Both ends reconnected to the restarted broker: a new job is sent and run.
                second = create_job(client, dataset_id, epoch_num=1, round_num=1)
                assert wait_for_job(client, second, timeout=120)["status"] == "succeeded", w.tail()
                assert w.alive(), w.tail()
            finally:
                w.stop()


def test_worker_lost_with_its_message_is_requeued_by_the_reaper(tmp_path, db_url, stack):
    """Redis restarts empty and the worker dies: only the reaper can bring the job back."""
    with RedisServer(tmp_path / "redis") as redis:
        settings = make_settings(
            tmp_path / "data", BROKER_URL=redis.url, DATABASE_URL=db_url, STALE_AFTER_SECONDS=6.0
        )
        with running_api(settings) as api, api.client() as client:
            first = start_worker(settings, tmp_path / "worker1.log", "doomed")
            second = None
            try:
                dataset_id = upload_id(client, stack)
                job_id = create_job(client, dataset_id, epoch_num=4, round_num=8)
                job = wait_until(
                    client, job_id, lambda j: j["rounds_done"] >= 1, "past round 1", workers=[first]
                )
                assert job["status"] == "running"
                redis.kill()
                first.kill()
                redis.start()  # empty: the task's message is gone with the old server
                second = start_worker(settings, tmp_path / "worker2.log", "rescuer")
                job = wait_for_job(client, job_id, timeout=150)
                assert job["status"] == "succeeded", (job, second.tail())
                assert job["attempts"] == 2 and job["worker"].startswith("rescuer")
                events = all_events(client, job_id)
                messages = [e["data"].get("message", "") for e in events if e["event"] == "status"]
                assert any("lost" in m and "requeued" in m for m in messages), messages
                # Resumed after its last finished round, not from the start.
                starts = [e["data"]["round"] for e in events if e["event"] == "round_started"]
                assert starts.count(1) == 1, starts
                assert sorted({e["data"]["round"] for e in events if e["event"] == "round"}) == list(
                    range(1, 9)
                )
            finally:
                first.stop()
                if second:
                    second.stop()


# ----------------------------------------------------------------------------- API restarted


def test_event_stream_resumes_across_an_api_restart(tmp_path, db_url, stack):
    settings = make_settings(tmp_path / "data", DATABASE_URL=db_url)
    api = ServeProcess(child_env(settings), tmp_path, "--no-worker")
    api.start()
    w = start_worker(settings, tmp_path / "worker.log", "sse")
    try:
        with httpx.Client(base_url=api.url, timeout=60) as client:
            dataset_id = upload_id(client, stack)
            job_id = create_job(client, dataset_id, epoch_num=3, round_num=4)
        received: list[dict] = []
        last_id, restarts, killed = None, 0, False
        deadline = time.monotonic() + 150
        while not received or received[-1]["event"] != "end":
            assert time.monotonic() < deadline, (received[-3:], w.tail())
            headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
            try:
                with httpx.stream(
                    "GET", f"{api.url}/api/jobs/{job_id}/events", headers=headers, timeout=30
                ) as response:
                    assert response.status_code == 200
                    for event in parse_sse(response.iter_lines()):
                        received.append(event)
                        last_id = int(event["id"])
                        # Pull the server away mid-stream, once the job is under way.
                        if not killed and event["event"] in ("loss", "round_started", "epoch"):
                            killed = True
                            api.kill()
                            time.sleep(1.0)
                            api.start()
                            restarts += 1
            except (httpx.TransportError, httpx.RemoteProtocolError):
                time.sleep(0.2)  # the server went away: reconnect with Last-Event-ID, as a browser does
        assert restarts == 1
        ids = [int(e["id"]) for e in received]
        assert len(ids) == len(set(ids)), "duplicate event ids after the restart"
        assert ids == sorted(ids)
        with httpx.Client(base_url=api.url, timeout=60) as client:
            complete = all_events(client, job_id)
            assert client.get(f"/api/jobs/{job_id}").json()["status"] == "succeeded"
        assert ids == [e["id"] for e in complete], "events missed across the restart"
        assert [e["event"] for e in received] == [e["event"] for e in complete]
    finally:
        w.stop()
        api.kill()


# ----------------------------------------------------------------------------- disk full


@pytest.fixture
def small_jobs_disk(tmp_path):
    """DATA_DIR/jobs on a real 24 MB tmpfs (the database and datasets stay on the big disk)."""
    jobs = tmp_path / "data" / "jobs"
    jobs.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(jobs)], capture_output=True, text=True
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs (needs root): {mounted.stderr}"
    try:
        yield jobs
    finally:
        subprocess.run(["umount", "-l", str(jobs)], check=True)


def fill(folder: Path) -> Path:
    """Write zeros into `folder` until its filesystem is full, as another user's job would."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 4096, 1):  # big blocks, then the last crumbs
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_while_rounds_are_written(tmp_path, db_url, stack, small_jobs_disk):
    settings = make_settings(tmp_path / "data", DATABASE_URL=db_url)
    with running_api(settings) as api, api.client() as client:
        w = start_worker(settings, tmp_path / "worker.log", "diskfull")
        try:
            dataset_id = upload_id(client, stack)
            job_id = create_job(client, dataset_id, epoch_num=4, round_num=12)
            wait_until(client, job_id, lambda j: j["rounds_done"] >= 1, "past round 1", workers=[w])
            filler = fill(small_jobs_disk)
            job = wait_for_job(client, job_id, timeout=120)
            assert job["status"] == "failed", (job, w.tail())
            assert "No space left on device" in job["error"], job["error"]
            assert job["rounds_done"] < 12
            out = small_jobs_disk / job_id
            rounds = sorted(p for p in out.iterdir() if p.name.startswith("round_"))
            assert rounds, "the round written before the disk filled is gone"
            for folder in rounds:
                assert_round_complete(folder, n=90)
            # The rounds the API lists are whole and downloadable.
            listed = client.get(f"/api/jobs/{job_id}/rounds").json()
            assert listed == list(range(1, len(rounds) + 1))
            classes = client.get(f"/api/jobs/{job_id}/rounds/{listed[-1]}/classes").json()
            assert sum(c["count"] for c in classes) == 90
            events = all_events(client, job_id)
            assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "failed"
            filler.unlink()
        finally:
            w.stop()


# ----------------------------------------------------------------------------- start-up race


def test_processes_starting_together_create_the_schema_once(tmp_path, db_url):
    """API and workers started at the same moment on a fresh database all come up (the migration
    lock lets one create the schema while the others wait, then find it at head)."""
    url = db_url or f"sqlite:///{tmp_path / 'fresh.db'}"
    code = (
        "import sys; from cryoclust.core.db import Database; d = Database(sys.argv[1]); "
        "d.session().__enter__().execute(__import__('sqlalchemy').text('select count(*) from jobs')); print('ok')"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=60) for p in starts]
    assert all(p.returncode == 0 for p in starts), [err[-500:] for _, err in results]
    assert all(out.strip() == "ok" for out, _ in results)


# ----------------------------------------------------------------------------- bad data at run time


def test_dataset_damaged_after_upload_fails_the_job_with_a_reason(tmp_path, db_url, stack):
    """The stored stack is cut short behind the API's back: the job fails, it does not hang."""
    settings = make_settings(tmp_path / "data", DATABASE_URL=db_url)
    with running_api(settings) as api, api.client() as client:
        dataset_id = upload_id(client, stack)
        stored = settings.data_dir / "datasets" / dataset_id / stack.name
        stored.write_bytes(stored.read_bytes()[: 1024 + 16 * 16 * 4 * 10])
        job_id = create_job(client, dataset_id, epoch_num=1, round_num=1)
        w = start_worker(settings, tmp_path / "worker.log", "damaged")
        try:
            job = wait_for_job(client, job_id, timeout=120)
        finally:
            w.stop()
        assert job["status"] == "failed", job
        assert "truncated" in job["error"] and stack.name in job["error"], job["error"]
        events = all_events(client, job_id)
        assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "failed"
