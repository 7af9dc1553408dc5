"""Serve the web app and the REST API, with a local worker on the embedded defaults.

With nothing configured, everything lives under ./data: a SQLite database, a filesystem job
queue and the files; no Redis or PostgreSQL is needed. The server listens on 127.0.0.1 unless
--host says otherwise; set CRYOCLUST_API_TOKEN before listening on a network. Ctrl-C stops the
server and the worker (a running job goes back to the queue and resumes on the next start).

Example:
  cryoclust serve --demo                     # first start: a simulated dataset and a job on it
  cryoclust serve --port 8080 --device cpu
  CRYOCLUST_API_TOKEN=secret cryoclust serve --host 0.0.0.0 --no-worker
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEMO_MARK = ".demo_created"
TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")
# The demo: realistic simulated particles (random in-plane rotation, shifts, CTF, SNR 0.1 and a
# little junk), small enough for its job to finish in a few minutes on two CPU cores.
DEMO_PARTICLES = 1000
DEMO_VIEWS = 6
DEMO_SIMULATION = [
    *("-n", str(DEMO_PARTICLES), "-k", str(DEMO_VIEWS), "--box", "64", "--snr", "0.1"),
    *("--rotate", "--shift", "3", "--ctf", "--junk", "0.05", "--seed", "0"),
]
DEMO_NAME = f"demo (simulated: {DEMO_VIEWS} views, rotated, shifted, CTF, SNR 0.1, 5% junk)"
DEMO_JOB = {"cluster_num": DEMO_VIEWS, "round_num": 3}  # everything else: the defaults
WORKER_STOP_SECONDS = 20


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--no-worker", action="store_true", help="serve only; workers run elsewhere")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="on first start, add a simulated demo dataset and queue a job on it with the default method",
    )
    parser.add_argument("--device", help="device of the local worker (default: CRYOCLUST_DEVICE or cuda:0)")
    parser.add_argument("--data-dir", help="DATA_DIR (default: CRYOCLUST_DATA_DIR or ./data)")
    parser.add_argument("--access-log", action="store_true", help="print a line per HTTP request")


def make_demo(app) -> tuple[str, str] | None:
    """Simulate a realistic small dataset, register it and queue a job on it with the default
    method, once per DATA_DIR; returns (dataset id, job id), or None when it was done before."""
    from backend.schemas import JobCreate
    from backend.services.datasets import add as add_dataset
    from backend.services.jobs import create as create_job
    from backend.storage import ReceivedFile

    settings, storage = app.state.settings, app.state.storage
    mark = settings.data_dir / DEMO_MARK
    if mark.exists():
        return None
    work = storage.new_tmp_dir("demo-")
    try:
        # A separate process: the simulator's imports stay out of the server.
        subprocess.run(
            [sys.executable, "-m", "cryoclust", "simulate", *DEMO_SIMULATION, "-o", str(work / "sim")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        upload = storage.new_tmp_dir("upload-")
        received = []
        for name in ("particles.star", "particles.mrcs"):  # the .star carries the CTF
            target = upload / name
            shutil.move(work / "sim" / name, target)
            received.append(ReceivedFile(name, target, target.stat().st_size, _sha256(target)))
        try:
            with app.state.db.session() as session:
                dataset = add_dataset(session, storage, upload, received, DEMO_NAME)
                dataset_id = dataset.id
        finally:
            storage.remove(upload)
        params = JobCreate(dataset_id=dataset_id, **DEMO_JOB).model_dump(exclude={"dataset_id"})
        with app.state.db.session() as session:
            job_id = create_job(session, app.state.dispatcher, dataset_id, params).id
        mark.write_text(f"{dataset_id}\n{job_id}\n")
        return dataset_id, job_id
    finally:
        storage.remove(work)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def start_worker(settings, device: str | None) -> subprocess.Popen:
    env = dict(os.environ, **settings.env())
    if device:
        env["CRYOCLUST_DEVICE"] = device
    # Its own session: Ctrl-C reaches only the server, which then stops the worker in order.
    return subprocess.Popen(
        [sys.executable, "-m", "cryoclust", "worker", "--loglevel", "warning", "--quiet"],
        env=env,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    print("cryoclust: stopping the worker (its job, if any, goes back to the queue)", flush=True)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _TokenRedactor(logging.Filter):
    """Masks `token=` in access lines: the page's event stream passes the token in its query
    (EventSource sends no header), and a log must not hold the secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                TOKEN_IN_QUERY.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def _server_class():
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising Ctrl-C after its graceful shutdown."""

        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def main(args: argparse.Namespace) -> int:
    if args.data_dir:
        os.environ["CRYOCLUST_DATA_DIR"] = args.data_dir
    if args.device:
        os.environ["CRYOCLUST_DEVICE"] = args.device

    import uvicorn

    _Server = _server_class()
    from backend.app import create_app
    from cryoclust.core.settings import Settings

    settings = Settings()
    host = args.host or settings.HOST
    port = args.port or settings.PORT
    app = create_app(settings)
    if args.demo:
        demo = make_demo(app)
        if demo:
            print(f"cryoclust: added the demo dataset {demo[0]} and queued job {demo[1]} on it", flush=True)
    if host in LOOPBACK:
        print(
            f"cryoclust: listening on {host} only (this machine); use --host 0.0.0.0 to open it "
            "to the network, with CRYOCLUST_API_TOKEN set",
            flush=True,
        )
    elif not settings.API_TOKEN:
        print(
            f"cryoclust: WARNING: listening on {host} with no CRYOCLUST_API_TOKEN: anyone who "
            "reaches this port can upload data and run jobs",
            flush=True,
        )
    worker = None if args.no_worker else start_worker(settings, args.device)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"cryoclust: data in {settings.data_dir}; open http://{shown}:{port}/", flush=True)
    try:
        # uvicorn's access lines are INFO: --access-log shows its start-up lines as well.
        level = "info" if args.access_log else "warning"
        config = uvicorn.Config(app, host=host, port=port, log_level=level, access_log=args.access_log)
        logging.getLogger("uvicorn.access").addFilter(_TokenRedactor())  # after Config set logging up
        _Server(config).run()
    finally:
        if worker is not None:
            stop_worker(worker)
    return 0
