"""Load test of a local service: event-stream followers, large uploads and listing traffic at
once, while two jobs run. Bounded: fixed counts and durations, loopback only, stops by itself.

It starts its own redis-server on a free port (no persistence), `cryoclust serve --no-worker`
and two `cryoclust worker` processes on a temporary DATA_DIR, then for --duration seconds:
  --streams clients following the two jobs' event streams (reconnecting with Last-Event-ID),
  --uploads concurrent uploads of a stack of --upload-mb MB each (streamed from disk),
  --rate requests/s alternating GET /api/jobs and GET /api/datasets (open loop).
It reports p50/p99 latencies per kind, errors (any non-2xx or transport error), and the API
process's RSS (baseline and peak, sampled every 0.1 s). Several --upload-mb values run the
whole scenario once each, to show that the API's memory does not grow with upload size.

Example:
  .venv/bin/python benchmarks/load.py                              # 200 MB and 20 MB uploads
  .venv/bin/python benchmarks/load.py --duration 20 --upload-mb 50 --out /tmp/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the tests' support package starts the service

from support.processes import Process, RedisServer, ServeProcess, wait_for_health, worker_command  # noqa: E402
from support.settings import child_env, make_settings  # noqa: E402

from worker.engine.io.mrc import write_stack  # noqa: E402


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of listing traffic (default 60)"
    )
    parser.add_argument("--streams", type=int, default=50, help="event-stream followers (default 50)")
    parser.add_argument("--uploads", type=int, default=5, help="concurrent uploads (default 5)")
    parser.add_argument(
        "--upload-mb", type=int, nargs="+", default=[200, 20], help="upload sizes, one run each"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="listing requests per second (default 50)")
    parser.add_argument("--work-dir", help="where DATA_DIR and the stacks go (default: a temporary folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "load.json"))


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.error_samples: list[str] = []
        self.counters: dict[str, int] = {}

    def ok(self, kind: str, seconds: float) -> None:
        self.latency.setdefault(kind, []).append(seconds)

    def error(self, kind: str, what: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind}: {what}"[:300])

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def summary(self) -> dict:
        kinds = {}
        for kind, values in sorted(self.latency.items()):
            kinds[kind] = {
                "count": len(values),
                "p50_ms": round(1000 * percentile(values, 50), 1),
                "p99_ms": round(1000 * percentile(values, 99), 1),
                "max_ms": round(1000 * max(values), 1),
            }
        return {
            "latency": kinds,
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
            "error_samples": self.error_samples,
            "counters": dict(self.counters),
        }


class RssSampler(threading.Thread):
    """Peak resident memory of one process, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.1):
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.append(rss)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


class Service:
    """redis-server + API + two workers on one DATA_DIR, all children of this script."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.redis: RedisServer | None = None
        self.serve: ServeProcess | None = None
        self.workers: list[Process] = []

    @property
    def url(self) -> str:
        return self.serve.url

    @property
    def api(self) -> Process:
        return self.serve.process

    def start(self) -> None:
        self.redis = RedisServer(self.work / "redis").start()
        # The service's own heartbeat timings, not the tests' fast ones.
        settings = make_settings(
            self.work / "data",
            BROKER_URL=self.redis.url,
            QUEUE=f"load-{uuid.uuid4().hex[:8]}",
            HEARTBEAT_SECONDS=10.0,
            STALE_AFTER_SECONDS=120.0,
        )
        env = child_env(settings)
        self.serve = ServeProcess(env, self.work, "--no-worker")
        self.serve.start(lambda health: health["status"] == "ok")
        self.workers = [
            Process(worker_command(f"load{i}", "warning"), self.work / f"worker{i}.log", env)
            for i in range(2)
        ]
        wait_for_health(self.url, self.api, lambda health: len(health["workers"]) == 2)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(20)
        if self.serve:
            self.serve.stop(20)
        if self.redis:
            self.redis.kill()


def make_stack(path: Path, megabytes: int, box: int = 128) -> Path:
    """A float32 stack of about `megabytes` MB (noise; only its size matters here)."""
    n = max(1, megabytes * 2**20 // (4 * box * box))
    rng = np.random.default_rng(0)
    return write_stack(path, rng.normal(size=(n, box, box)).astype(np.float32), pixel_size=1.0)


def make_job_stack(path: Path) -> Path:
    rng = np.random.default_rng(1)
    n, box = 600, 32
    yy, xx = np.mgrid[:box, :box] - box / 2
    shapes = [np.exp(-(xx**2 + yy**2) / 30.0), (np.abs(xx) < 5) * 1.0, (np.abs(yy) < 4) * 1.0]
    images = np.stack([shapes[i % 3] for i in range(n)]) + 0.5 * rng.normal(size=(n, box, box))
    return write_stack(path, images.astype(np.float32), pixel_size=2.0)


async def follow(client: httpx.AsyncClient, job_id: str, stats: Stats, until: float) -> None:
    """One event-stream follower: connect, read, reconnect with Last-Event-ID until `until`."""
    last_id = None
    while time.monotonic() < until:
        headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
        started = time.monotonic()
        try:
            async with client.stream(
                "GET",
                f"/api/jobs/{job_id}/events",
                headers=headers,
                timeout=httpx.Timeout(30, read=until - time.monotonic() + 30),
            ) as response:
                if response.status_code != 200:
                    stats.error("sse_connect", f"HTTP {response.status_code}")
                    await asyncio.sleep(1)
                    continue
                first = True
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        if first:
                            stats.ok("sse_first_event", time.monotonic() - started)
                            first = False
                        new_id = int(line[4:])
                        if last_id is not None and new_id <= last_id:
                            stats.error("sse_order", f"id {new_id} after {last_id}")
                        last_id = new_id
                        stats.count("sse_events")
                    elif line.startswith("event: end"):
                        stats.count("sse_ended")
                        return
                    if time.monotonic() >= until:
                        return
        except httpx.HTTPError as exc:
            stats.error("sse", f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)


async def upload(client: httpx.AsyncClient, path: Path, index: int, stats: Stats) -> str | None:
    started = time.monotonic()
    try:
        with open(path, "rb") as handle:
            response = await client.post(
                "/api/datasets",
                files=[("files", (f"upload{index}.mrcs", handle))],
                data={"name": f"load upload {index}"},
                timeout=600,
            )
    except httpx.HTTPError as exc:
        stats.error("upload", f"{type(exc).__name__}: {exc}")
        return None
    if response.status_code != 201:
        stats.error("upload", f"HTTP {response.status_code}: {response.text[:200]}")
        return None
    stats.ok("upload", time.monotonic() - started)
    return response.json()["id"]


async def listings(client: httpx.AsyncClient, rate: float, duration: float, stats: Stats) -> None:
    """Open loop: request i starts at i / rate seconds, whether or not earlier ones returned."""

    async def one(path: str, kind: str) -> None:
        started = time.monotonic()
        try:
            response = await client.get(path, timeout=30)
        except httpx.HTTPError as exc:
            stats.error(kind, f"{type(exc).__name__}: {exc}")
            return
        if response.status_code != 200:
            stats.error(kind, f"HTTP {response.status_code}")
        else:
            stats.ok(kind, time.monotonic() - started)

    tasks = []
    begin = time.monotonic()
    for i in range(int(rate * duration)):
        await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
        path, kind = ("/api/jobs", "list_jobs") if i % 2 == 0 else ("/api/datasets", "list_datasets")
        tasks.append(asyncio.create_task(one(path, kind)))
    await asyncio.gather(*tasks)


async def scenario(service: Service, args, stack: Path, job_stack: Path, stats: Stats) -> dict:
    limits = httpx.Limits(max_connections=args.streams + args.uploads + 200, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=30) as client:
        with open(job_stack, "rb") as handle:
            response = await client.post("/api/datasets", files=[("files", (job_stack.name, handle))])
        response.raise_for_status()
        dataset_id = response.json()["id"]
        jobs = []
        for seed in range(2):
            response = await client.post(
                "/api/jobs",
                json={
                    "dataset_id": dataset_id,
                    "cluster_num": 3,
                    "size": 32,
                    "epoch_num": 50,
                    "round_num": 50,
                    "batch_size": 64,
                    "seed": seed,
                    "device": "cpu",
                },
            )
            response.raise_for_status()
            jobs.append(response.json()["id"])
        deadline = time.monotonic() + 60
        while True:
            states = [(await client.get(f"/api/jobs/{j}")).json()["status"] for j in jobs]
            if all(s == "running" for s in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs did not start: {states}")
            await asyncio.sleep(0.3)

        until = time.monotonic() + args.duration
        followers = [
            asyncio.create_task(follow(client, jobs[i % 2], stats, until)) for i in range(args.streams)
        ]
        uploads = [asyncio.create_task(upload(client, stack, i, stats)) for i in range(args.uploads)]
        await listings(client, args.rate, args.duration, stats)
        uploaded = await asyncio.gather(*uploads)
        await asyncio.gather(*followers)

        states = [(await client.get(f"/api/jobs/{j}")).json() for j in jobs]
        stats.count("jobs_running_at_end", sum(s["status"] == "running" for s in states))
        for j in jobs:
            await client.post(f"/api/jobs/{j}/cancel")
        datasets = (await client.get("/api/datasets")).json()
        sizes = {d["id"]: d["size_bytes"] for d in datasets}
        stats.count("uploads_stored", sum(1 for u in uploaded if u and sizes.get(u) == stack.stat().st_size))
        return {"jobs": [{k: s[k] for k in ("id", "status", "rounds_done", "worker")} for s in states]}


def run_once(args, work: Path, megabytes: int) -> dict:
    stack = make_stack(work / f"stack_{megabytes}mb.mrcs", megabytes)
    job_stack = make_job_stack(work / "job_particles.mrcs")
    service = Service(work / f"run_{megabytes}mb")
    service.work.mkdir()
    stats = Stats()
    try:
        service.start()
        sampler = RssSampler(service.api.pid)
        sampler.start()
        time.sleep(1.0)
        baseline = (
            int(np.median(sampler.samples))
            if sampler.samples
            else psutil.Process(service.api.pid).memory_info().rss
        )
        started = time.monotonic()
        extra = asyncio.run(scenario(service, args, stack, job_stack, stats))
        elapsed = time.monotonic() - started
        sampler.stop()
    finally:
        service.stop()
    result = {
        "upload_mb": megabytes,
        "upload_bytes": stack.stat().st_size,
        "seconds": round(elapsed, 1),
        "api_rss_baseline_mb": round(baseline / 2**20, 1),
        "api_rss_peak_mb": round(sampler.peak / 2**20, 1),
        **stats.summary(),
        **extra,
    }
    shutil.rmtree(service.work, ignore_errors=True)
    stack.unlink()
    return result


def main(args: argparse.Namespace) -> int:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="cryoclust-load-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for megabytes in args.upload_mb:
            print(
                f"load: {args.streams} streams, {args.uploads} x {megabytes} MB uploads, "
                f"{args.rate:g} req/s for {args.duration:g} s ...",
                flush=True,
            )
            run = run_once(args, work, megabytes)
            runs.append(run)
            print(
                json.dumps(
                    {
                        k: run[k]
                        for k in (
                            "upload_mb",
                            "api_rss_baseline_mb",
                            "api_rss_peak_mb",
                            "errors_total",
                            "latency",
                        )
                    },
                    indent=1,
                ),
                flush=True,
            )
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        },
        "settings": {
            "duration_s": args.duration,
            "streams": args.streams,
            "uploads": args.uploads,
            "rate_per_s": args.rate,
        },
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"load: results in {args.out}")
    return 1 if any(run["errors_total"] for run in runs) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    sys.exit(main(parser.parse_args()))
