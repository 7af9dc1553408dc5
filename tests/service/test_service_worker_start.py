"""A worker starting on a machine without a GPU: asked for cuda:0, it resolves its device at
start-up, names itself after the device it really uses, says so in one line, and (run as root,
as in a container) shows no Celery superuser warning."""

from __future__ import annotations

import os
import socket
import sys

from support.api import running_api
from support.processes import start_worker, wait_for_health
from support.settings import make_settings


def test_a_worker_without_a_gpu_is_named_after_the_cpu(tmp_path, db_url):
    import torch

    assert not torch.cuda.is_available(), "this test needs a machine without a GPU"
    settings = make_settings(tmp_path / "data", DATABASE_URL=db_url, DEVICE="cuda:0")
    command = [sys.executable, "-m", "cryoclust", "worker", "--loglevel", "info"]
    with running_api(settings) as api:
        worker = start_worker(settings, tmp_path / "worker.log", "unused", command)
        try:
            health = wait_for_health(api.url, worker, lambda h: bool(h["workers"]), timeout=60)
        finally:
            worker.stop(10)
    assert health["workers"] == [f"cpu-{worker.pid}@{socket.gethostname()}"]
    log = worker.tail(20000)
    assert "no CUDA GPU available; cuda:0 falls back to cpu" in log
    assert "device cpu" in log and "device cuda" not in log
    assert "superuser privileges" not in log and "absolutely not recommended" not in log  # Celery's warning
    if os.geteuid() == 0:
        assert "running as root" in log
