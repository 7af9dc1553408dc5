"""Run a worker that executes classification jobs, one at a time, on one device.

Start one per GPU. Workers on several machines share one broker (CRYOCLUST_BROKER_URL, Redis),
one database (CRYOCLUST_DATABASE_URL, PostgreSQL) and one DATA_DIR on a shared filesystem. With
no broker URL the worker reads the filesystem queue under DATA_DIR (same machine as the API).

Ctrl-C (or SIGTERM) stops the worker after the current batch: its job goes back to the queue
and resumes from its last complete round on the next worker.

Example:
  cryoclust worker                                   # embedded defaults, device from settings
  cryoclust worker --device cuda:1 --name gpu1
  CRYOCLUST_BROKER_URL=redis://redis-host:6379/0 \\
  CRYOCLUST_DATABASE_URL=postgresql+psycopg://cryoclust@db-host/cryoclust \\
  CRYOCLUST_DATA_DIR=/shared/cryoclust cryoclust worker --device cuda:0
"""

from __future__ import annotations

import argparse
import os
import socket
import warnings


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        help="device for jobs that ask none: cpu, cuda, cuda:N "
        "(default: CRYOCLUST_DEVICE or cuda:0, falling back to cpu)",
    )
    parser.add_argument("--queue", help="queue to consume (default: CRYOCLUST_QUEUE or cryoclust)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        choices=[1],
        help="jobs at once per process: always 1 (start one worker per GPU)",
    )
    parser.add_argument(
        "--name", help="worker name shown in /api/health (default: the device it really uses and its pid)"
    )
    parser.add_argument("--data-dir", help="DATA_DIR (default: CRYOCLUST_DATA_DIR or ./data)")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--quiet", action="store_true", help="no start-up banner")


def main(args: argparse.Namespace) -> int:
    # The task module reads its settings from the environment; set what the flags say first.
    if args.device:
        os.environ["CRYOCLUST_DEVICE"] = args.device
    if args.queue:
        os.environ["CRYOCLUST_QUEUE"] = args.queue
    if args.data_dir:
        os.environ["CRYOCLUST_DATA_DIR"] = args.data_dir
    # Decide the device now, so that the worker's name, its heartbeat and its jobs all say the
    # one it really uses (a machine without a GPU runs on cpu, whatever was asked).
    device, notice = _resolve_device(os.environ.get("CRYOCLUST_DEVICE"))
    os.environ["CRYOCLUST_DEVICE"] = device
    if notice and not args.quiet:
        print(f"cryoclust worker: {notice}", flush=True)
    _quiet_root_warning(args.quiet)

    from cryoclust.core.celery_app import ensure_broker_dirs, make_celery
    from cryoclust.core.db import process_database
    from cryoclust.core.settings import Settings

    settings = Settings()
    process_database(settings)  # the schema upgraded (or refused) before the first job; the tasks use it
    ensure_broker_dirs(settings)
    app = make_celery(settings)
    name = args.name or f"{settings.DEVICE.replace(':', '')}-{os.getpid()}"
    if "@" not in name:
        name = f"{name}@{socket.gethostname()}"
    print(
        f"cryoclust worker {name}: queue {settings.QUEUE} on {settings.broker_url.split('@')[-1]}, "
        f"device {settings.DEVICE}, data in {settings.data_dir}",
        flush=True,
    )
    app.worker_main(
        ["--quiet"] * args.quiet
        + [
            "worker",
            f"--hostname={name}",
            f"--queues={settings.QUEUE}",
            "--pool=solo",  # one job at a time, in this process (the GPU context stays here)
            "--concurrency=1",
            "--prefetch-multiplier=1",
            "--without-mingle",
            "--without-gossip",
            f"--loglevel={args.loglevel.upper()}",
        ]
    )
    return 0


def _resolve_device(requested: str | None) -> tuple[str, str | None]:
    from cryoclust.core.settings import Settings
    from worker.engine.devices import resolve_device

    device, notice = resolve_device(requested or Settings().DEVICE)
    return str(device), notice


def _quiet_root_warning(quiet: bool) -> None:
    """Celery warns at length when a worker runs as root. In a container that is the norm (and
    the queue carries only JSON, never pickle), so say it in one line instead."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)
    if not quiet:
        print(
            "cryoclust worker: running as root (usual in a container); Celery's superuser warning "
            "is not shown. Where you can, run workers as an ordinary user.",
            flush=True,
        )
