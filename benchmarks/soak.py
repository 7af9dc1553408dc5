"""Soak test of the service under faults: many small jobs while workers are killed with SIGKILL
at random moments and Redis is restarted once; every job must end succeeded exactly once, with
every round complete and no stray files under DATA_DIR.

It runs real processes on this machine: its own redis-server on a free port (append-only file
synced at every write, as a deployment keeps its queue), a fresh schema of the PostgreSQL on
127.0.0.1:5432 (dropped afterwards), `cryoclust serve --no-worker` and --workers
`cryoclust worker` processes, with 1 s heartbeats and jobs declared lost after 8 s. Then:
  - it queues half of --jobs tiny jobs (a 60-particle stack, `--method reference`, size 16,
    1 epoch, 1 or 2 rounds), the rest after the Redis restart;
  - every --kill-every seconds on average (exponential gaps) it kills a random worker and its
    children with SIGKILL, and starts a new one (new name) 0.5-3 s later. It never kills a worker
    whose job has already lost MAX_ATTEMPTS - 1 workers, since the next loss fails that job by
    design (jobstate.reap_stale);
  - once a quarter of the jobs have succeeded it restarts Redis (SIGTERM, same port).
At the end it checks, for every job: status succeeded; exactly one `succeeded` status event and
one `end` event in job_events; its rounds 1..R complete, each with the same files, labels and
embedding for every particle; summary.json and particles.star there; and, under DATA_DIR, no
hidden or .tmp file or folder (a temporary round or a half-written file) and nothing left in
tmp/. Results go to --out (benchmarks/results/soak.json) and a summary is printed; the exit
status is 1 when any check failed.

Example:
  .venv/bin/python benchmarks/soak.py                         # 200 jobs, 3 workers
  nice -n 10 .venv/bin/python benchmarks/soak.py --jobs 20 --kill-every 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the tests' support package starts the service

from support.databases import postgres_schema
from support.processes import Process, RedisServer, ServeProcess, start_worker
from support.settings import child_env, make_settings
from support.stacks import write_stack

from worker.engine.outputs import read_labels_csv

TERMINAL = {"succeeded", "failed", "cancelled"}
PARTICLES = 60
REQUIRED_ROUND_FILES = {"labels.csv", "embedding_2d.npy", "classes.json", "class_averages.mrcs", "round.json"}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=200, help="jobs to run (default 200)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument(
        "--kill-every", type=float, default=15.0, help="mean seconds between SIGKILLs (default 15)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the kills, the rounds per job and the jobs' seeds"
    )
    parser.add_argument(
        "--timeout", type=float, default=7200.0, help="give up after this many seconds (default 7200)"
    )
    parser.add_argument(
        "--work-dir", help="DATA_DIR, logs and Redis's file go here (default: a temporary folder)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (it is kept anyway when a check fails)"
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "soak.json"))


class WorkerPool:
    """--workers `cryoclust worker` processes; a killed one is replaced by a new one (new name)."""

    def __init__(self, settings, folder: Path, size: int) -> None:
        self.settings = settings
        self.folder = folder
        self.started = 0
        self.live: dict[str, Process] = {}
        for _ in range(size):
            self.start_one()

    def start_one(self) -> str:
        self.started += 1
        name = f"soak{self.started}"
        self.live[name] = start_worker(self.settings, self.folder / f"{name}.log", name)
        return name

    def kill(self, name: str) -> None:
        process = self.live.pop(name)
        process.kill()  # SIGKILL to its process group: the worker and anything it started
        process.stop()

    def stop_all(self) -> None:
        for process in self.live.values():
            process.stop(30)
        self.live.clear()


def job_params(rng: random.Random, index: int) -> dict:
    return {
        "method": "reference",
        "cluster_num": 3,
        "epoch_num": 1,
        "round_num": rng.choice([1, 2]),
        "batch_size": 16,
        "size": 16,
        "device": "cpu",
        "seed": index,
    }


def queue_jobs(
    client: httpx.Client, dataset_id: str, rng: random.Random, first: int, count: int
) -> list[str]:
    ids = []
    for index in range(first, first + count):
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, **job_params(rng, index)})
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


def check_events(database_url: str, job_ids: list[str]) -> list[str]:
    """Each job has exactly one `succeeded` status event and one `end` event."""
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT job_id, kind, data FROM job_events WHERE kind IN ('status', 'end')")
        ).all()
    engine.dispose()
    succeeded = dict.fromkeys(job_ids, 0)
    ends = dict.fromkeys(job_ids, 0)
    for job_id, kind, data in rows:
        data = json.loads(data) if isinstance(data, str) else data
        if kind == "status" and data.get("status") == "succeeded":
            succeeded[job_id] = succeeded.get(job_id, 0) + 1
        elif kind == "end":
            ends[job_id] = ends.get(job_id, 0) + 1
    problems = [f"job {j}: {n} succeeded status events" for j, n in succeeded.items() if n != 1]
    problems += [f"job {j}: {n} end events" for j, n in ends.items() if n != 1]
    return problems


def check_rounds(client: httpx.Client, data_dir: Path, job: dict) -> list[str]:
    """Rounds 1..R complete, each with the same files, for every particle; final files there."""
    folder = data_dir / "jobs" / job["id"]
    expected = list(range(1, job["round_num"] + 1))
    rounds = client.get(f"/api/jobs/{job['id']}/rounds").json()
    if rounds != expected:
        return [f"job {job['id']}: rounds {rounds}, expected {expected}"]
    problems = []
    files = None
    for number in expected:
        round_folder = folder / f"round_{number:02d}"
        names = {p.name for p in round_folder.iterdir()}
        files = files or names
        if names != files or not REQUIRED_ROUND_FILES <= names:
            problems.append(f"job {job['id']} round {number}: files {sorted(names)}")
            continue
        labels = read_labels_csv(round_folder / "labels.csv")
        xy = np.load(round_folder / "embedding_2d.npy")
        if labels.shape != (PARTICLES,) or xy.shape != (PARTICLES, 2):
            problems.append(f"job {job['id']} round {number}: {labels.shape[0]} labels, embedding {xy.shape}")
    for name in ("summary.json", "particles.star", "config.json"):
        if not (folder / name).is_file():
            problems.append(f"job {job['id']}: {name} is missing")
    return problems


def stray_files(data_dir: Path, job_ids: list[str]) -> list[str]:
    """Hidden or .tmp files and folders (temporary rounds, half-written files), files left in
    tmp/, and job folders of no job."""
    stray = [
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*")
        if p.name.startswith(".") or p.name.endswith(".tmp")
    ]
    tmp = data_dir / "tmp"
    if tmp.is_dir():
        stray += [str(p.relative_to(data_dir)) for p in tmp.iterdir()]
    jobs = data_dir / "jobs"
    stray += [str(p.relative_to(data_dir)) for p in jobs.iterdir() if p.name not in set(job_ids)]
    return sorted(stray)


def run(args: argparse.Namespace, work: Path, database_url: str) -> dict:
    rng = random.Random(args.seed)
    redis = RedisServer(work / "redis", persistent=True).start()
    settings = make_settings(
        work / "data",
        BROKER_URL=redis.url,
        DATABASE_URL=database_url,
        HEARTBEAT_SECONDS=1.0,
        STALE_AFTER_SECONDS=8.0,
    )
    serve = ServeProcess(child_env(settings), work, "--no-worker")
    pool = None
    log: list[str] = []
    started = time.monotonic()

    def note(text: str) -> None:
        line = f"{time.monotonic() - started:7.1f} s  {text}"
        log.append(line)
        print(line, flush=True)

    try:
        serve.start()
        pool = WorkerPool(settings, work, args.workers)
        client = httpx.Client(base_url=serve.url, timeout=60)
        stack = write_stack(work / "particles.mrcs", n=PARTICLES, box=32)
        response = client.post("/api/datasets", files=[("files", (stack.name, stack.read_bytes()))])
        response.raise_for_status()
        dataset_id = response.json()["id"]
        first_wave = (args.jobs + 1) // 2
        job_ids = queue_jobs(client, dataset_id, rng, 0, first_wave)
        note(f"queued {len(job_ids)} jobs; {args.workers} workers")
        kills = kills_mid_job = skipped_kills = 0
        redis_restarted_at = None
        next_kill = time.monotonic() + rng.expovariate(1 / args.kill_every)
        pending_starts: list[float] = []
        deadline = started + args.timeout
        while True:
            jobs = {j["id"]: j for j in client.get("/api/jobs", params={"limit": 5000}).json()}
            done = sum(jobs[j]["status"] in TERMINAL for j in job_ids if j in jobs)
            succeeded = sum(jobs[j]["status"] == "succeeded" for j in job_ids if j in jobs)
            if len(job_ids) == args.jobs and done == args.jobs:
                break
            if time.monotonic() > deadline:
                note(f"timed out with {done} of {args.jobs} jobs ended")
                break
            now = time.monotonic()
            for due in [t for t in pending_starts if t <= now]:
                pending_starts.remove(due)
                note(f"started worker {pool.start_one()}")
            if redis_restarted_at is None and succeeded >= args.jobs // 4:
                note(f"restarting Redis ({succeeded} jobs succeeded)")
                redis.restart()
                redis_restarted_at = round(now - started, 1)
                job_ids += queue_jobs(client, dataset_id, rng, first_wave, args.jobs - first_wave)
                note(f"Redis is back; queued the other {args.jobs - first_wave} jobs")
            if now >= next_kill and pool.live:
                next_kill = now + rng.expovariate(1 / args.kill_every)
                name = rng.choice(sorted(pool.live))
                running = [
                    j
                    for j in jobs.values()
                    if j["status"] == "running" and (j["worker"] or "").split("@")[0] == name
                ]
                if running and running[0]["attempts"] >= settings.MAX_ATTEMPTS:
                    skipped_kills += 1  # the next loss would fail this job by design
                else:
                    pool.kill(name)
                    kills += 1
                    kills_mid_job += bool(running)
                    what = f"job {running[0]['id']} round {running[0]['round']}" if running else "idle"
                    note(f"SIGKILL {name} ({what}); {succeeded}/{args.jobs} succeeded")
                    pending_starts.append(now + rng.uniform(0.5, 3.0))
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        pool.stop_all()
        jobs = {j["id"]: j for j in client.get("/api/jobs", params={"limit": 5000}).json()}
        mine = [jobs[j] for j in job_ids]
        problems = [
            f"job {j['id']}: {j['status']} {j['error'] or ''}".strip()
            for j in mine
            if j["status"] != "succeeded"
        ]
        problems += check_events(settings.database_url, job_ids)
        for job in mine:
            if job["status"] == "succeeded":
                problems += check_rounds(client, settings.data_dir, job)
        stray = stray_files(settings.data_dir, job_ids)
        durations = sorted(
            (_seconds(j["finished_at"]) - _seconds(j["created_at"])) for j in mine if j["finished_at"]
        )
        client.close()
        return {
            "jobs": args.jobs,
            "workers": args.workers,
            "kill_every_s": args.kill_every,
            "seed": args.seed,
            "succeeded": sum(j["status"] == "succeeded" for j in mine),
            "failed": sum(j["status"] == "failed" for j in mine),
            "not_ended": sum(j["status"] not in TERMINAL for j in mine),
            "succeeded_exactly_once": not [p for p in problems if "events" in p],
            "rounds": sum(j["round_num"] for j in mine),
            "jobs_with_more_than_one_attempt": sum(j["attempts"] > 1 for j in mine),
            "most_attempts": max((j["attempts"] for j in mine), default=0),
            "sigkills": kills,
            "sigkills_during_a_job": kills_mid_job,
            "kills_skipped_at_max_attempts": skipped_kills,
            "worker_processes_started": pool.started,
            "redis_restarted_at_s": redis_restarted_at,
            "elapsed_s": round(elapsed, 1),
            "job_latency_s": {
                "p50": round(float(np.percentile(durations, 50)), 1),
                "max": round(durations[-1], 1),
            }
            if durations
            else None,
            "stray_files": stray,
            "problems": problems,
            "ok": not problems and not stray,
            "log": log,
        }
    finally:
        if pool:
            pool.stop_all()
        serve.stop()
        redis.kill()


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def main(args: argparse.Namespace) -> int:
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    with postgres_schema() as database_url:
        result = run(args, work, database_url)
    result = {
        "command": " ".join(["benchmarks/soak.py", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        **result,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{result['succeeded']} of {result['jobs']} jobs succeeded "
        f"({'exactly once each' if result['succeeded_exactly_once'] else 'NOT exactly once'}), "
        f"{result['rounds']} rounds, in {result['elapsed_s']} s; {result['sigkills']} SIGKILLs "
        f"({result['sigkills_during_a_job']} during a job), Redis restarted at {result['redis_restarted_at_s']} s; "
        f"{len(result['stray_files'])} stray files; {len(result['problems'])} problems"
    )
    for problem in (result["problems"] + result["stray_files"])[:20]:
        print("  ", problem)
    print(f"wrote {args.out}")
    if result["ok"] and not args.keep and not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    elif not result["ok"]:
        print(f"logs and DATA_DIR kept in {work}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    sys.exit(main(parser.parse_args()))
