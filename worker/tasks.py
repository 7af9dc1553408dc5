"""The Celery task "classify"(job_id): run the engine for one job and record what happens.

Thin on purpose: it loads the job and its dataset, builds a ClassifyConfig, calls
`worker.engine.pipeline.classify` with a callback that turns engine events into job_events rows,
and records the outcome. The engine resumes after the last complete round of an existing
out_dir, so a job delivered again after its worker died continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from celery import shared_task, signals

from cryoclust.core import jobstate
from cryoclust.core.db import Database, process_database
from cryoclust.core.heartbeats import Heartbeat
from cryoclust.core.settings import Settings
from cryoclust.core.tables import Dataset, Job
from worker.engine.errors import InputError, JobCancelled
from worker.engine.events import EpochDone, Event, LossPoint, RoundDone, RoundStarted, StageProgress

log = logging.getLogger("cryoclust.worker")

LOSS_INTERVAL = 0.2  # at most 5 loss (and epoch) events a second reach the database
CHECK_INTERVAL = 0.5  # how often the callback looks for a cancel request


class WorkerStopping(Exception):
    """The worker is shutting down: the job goes back to the queue and resumes later."""


class Superseded(Exception):
    """The job was requeued to another worker while this one still ran it (stale heartbeat)."""


_state: dict = {}
_stopping = threading.Event()


def _context() -> tuple[Settings, Database]:
    """Settings and database of this worker process, made once."""
    if "db" not in _state:
        _state["settings"] = Settings()
        _state["db"] = process_database(_state["settings"])  # made by worker/run.py at start-up
    return _state["settings"], _state["db"]


@signals.worker_ready.connect
def _start_heartbeat(sender=None, **_kwargs) -> None:
    settings, db = _context()
    name = getattr(sender, "hostname", None) or f"{socket.gethostname()}:{os.getpid()}"
    _state["heartbeat"] = Heartbeat(db, name, settings.DEVICE, settings.QUEUE, settings.HEARTBEAT_SECONDS)
    _state["heartbeat"].start()


@signals.worker_shutting_down.connect
def _on_shutting_down(**_kwargs) -> None:
    # Runs in the signal handler: only set a flag; the job's callback acts on it.
    _stopping.set()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    heartbeat = _state.pop("heartbeat", None)
    if heartbeat:
        heartbeat.stop()


class JobRecorder:
    """The engine's callback: events to rows (loss points throttled), progress, cancel checks."""

    def __init__(self, db: Database, job_id: str, worker: str, round_num: int) -> None:
        self.db = db
        self.job_id = job_id
        self.worker = worker
        self.round_num = round_num
        self.pairs_total = 1
        self.pending: LossPoint | None = None
        self.pending_epoch: EpochDone | None = None
        self.last_loss = 0.0
        self.stage: str | None = None
        self.last_stage = 0.0
        self.last_check = time.monotonic()

    def __call__(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, (LossPoint, EpochDone)):
            # Tiny datasets train many batches and epochs a second: keep the latest of each.
            if isinstance(event, LossPoint):
                self.pending = event
            else:
                self.pending_epoch = event
            if now - self.last_loss >= LOSS_INTERVAL:
                self._write([])
        elif isinstance(event, StageProgress):
            # A stage reports every chunk: a row per LOSS_INTERVAL, its first and its last.
            first = event.stage != self.stage
            if first or event.done >= event.total or now - self.last_stage >= LOSS_INTERVAL:
                self.stage, self.last_stage = event.stage, now
                self._write([event])
        else:
            self._write([event])
        if now - self.last_check >= CHECK_INTERVAL:
            self.last_check = now
            self._check()

    def notice(self, message: str) -> None:
        with self.db.session() as session:
            jobstate.add_event(session, self.job_id, "status", {"status": "running", "message": message})
            session.commit()

    def set_effective(self, effective: dict) -> None:
        """The parameters the run really uses: auto ones decided, the device it got."""
        with self.db.session() as session:
            job = session.get(Job, self.job_id)
            if job is not None:
                job.device = effective["device"]
                job.effective_params = effective
                session.commit()

    def flush(self) -> None:
        if self.pending or self.pending_epoch:
            self._write([])

    def _write(self, events: list[Event]) -> None:
        # The newest loss point and epoch summary held back by the throttle, in training order.
        held = [e for e in (self.pending, self.pending_epoch) if e is not None]
        held.sort(key=lambda e: (e.epoch, isinstance(e, EpochDone)))
        self.pending = self.pending_epoch = None
        if held:
            self.last_loss = time.monotonic()
        rows: list[tuple[str, dict]] = []
        values: dict = {}
        for e in held + list(events):
            if isinstance(e, LossPoint):
                rows.append(
                    (
                        "loss",
                        {
                            "round": e.round,
                            "epoch": e.epoch,
                            "step": e.step,
                            "pairs_done": e.pairs_done,
                            "loss": e.loss,
                        },
                    )
                )
                values = {"round": e.round, "progress": self._progress(e.round, e.pairs_done)}
            elif isinstance(e, EpochDone):
                rows.append(
                    ("epoch", {"round": e.round, "epoch": e.epoch, "loss": e.loss, "seconds": e.seconds})
                )
            elif isinstance(e, StageProgress):
                rows.append(("stage", {"round": e.round, "stage": e.stage, "done": e.done, "total": e.total}))
            elif isinstance(e, RoundStarted):
                self.pairs_total = max(1, e.pairs_total)
                rows.append(
                    (
                        "round_started",
                        {
                            "round": e.round,
                            "round_num": e.round_num,
                            "pairs_total": e.pairs_total,
                            "epochs": e.epochs,
                        },
                    )
                )
                values = {"round": e.round, "progress": self._progress(e.round, 0)}
            elif isinstance(e, RoundDone):
                rows.append(
                    (
                        "round",
                        {
                            "round": e.round,
                            "round_num": e.round_num,
                            "counts": list(e.counts),
                            "seconds": e.seconds,
                            "loss": e.loss,
                            "timings": dict(e.timings),
                            "churn": e.churn,
                            **dict(e.scores),
                        },
                    )
                )
                done = e.round / self.round_num if self.round_num else 1.0  # 0 rounds: round 0 is all
                values = {"round": e.round, "rounds_done": e.round, "progress": done}
        with self.db.session() as session:
            for kind, data in rows:
                jobstate.add_event(session, self.job_id, kind, data)
            job = session.get(Job, self.job_id)
            if job is not None:
                for key, value in values.items():
                    setattr(job, key, value)
            session.commit()

    def _progress(self, round_index: int, pairs_done: int) -> float:
        return min(1.0, ((round_index - 1) + pairs_done / self.pairs_total) / max(1, self.round_num))

    def _check(self) -> None:
        if _stopping.is_set():
            raise WorkerStopping()
        with self.db.session() as session:
            job = session.get(Job, self.job_id)
            if job is None or job.cancel_requested:
                raise JobCancelled()
            if job.status != "running" or job.worker != self.worker:
                raise Superseded()


def failure_message(exc: BaseException) -> str:
    if isinstance(exc, (InputError, ValueError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"cannot read or write files: {exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


@shared_task(name="classify", bind=True, acks_late=True, reject_on_worker_lost=True)
def classify(self, job_id: str) -> str:
    """Run (or resume) job `job_id`; returns its final status."""
    settings, db = _context()
    worker = self.request.hostname or f"{socket.gethostname()}:{os.getpid()}"
    if _stopping.is_set():
        # Fetched while this worker shuts down: hand it back untouched for the next worker.
        self.app.send_task("classify", args=[job_id], queue=settings.QUEUE)
        return "requeued"
    with db.session() as session:
        job = jobstate.claim(session, job_id, worker, settings.DEVICE, settings.STALE_AFTER_SECONDS)
        if job is None:
            return "skipped"
        dataset = session.get(Dataset, job.dataset_id)
        params, device, round_num = dict(job.params), job.device, job.round_num
    heartbeat = _state.get("heartbeat")
    if heartbeat:
        heartbeat.job_id = job_id
    recorder = JobRecorder(db, job_id, worker, round_num)
    status, error, message = "failed", None, None
    try:
        status, error, message = _run(settings, dataset, job_id, params, device, recorder)
    except WorkerStopping:
        recorder.flush()
        with db.session() as session:
            jobstate.requeue(
                session, session.get(Job, job_id), f"worker {worker} stopped; requeued", graceful=True
            )
            session.commit()
        self.app.send_task("classify", args=[job_id], queue=settings.QUEUE)
        return "requeued"
    except Superseded:
        log.warning("job %s: taken over by another worker; stopping here", job_id)
        return "superseded"
    finally:
        if heartbeat:
            heartbeat.job_id = None
    recorder.flush()
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is not None:
            jobstate.finish(session, job, status, error, message)
            session.commit()
    return status


def _run(
    settings: Settings, dataset: Dataset | None, job_id: str, params: dict, device: str, recorder: JobRecorder
):
    """The engine run itself; returns (status, error, message: why the rounds stopped early)."""
    if dataset is None:
        return "failed", "the job's dataset was deleted", None
    try:
        from cryoclust.core.datasets import open_stack
        from worker.engine.config import ClassifyConfig
        from worker.engine.devices import resolve_device
        from worker.engine.pipeline import classify as run_pipeline

        actual, notice = resolve_device(device)
        if notice:
            recorder.notice(notice)
        config = ClassifyConfig.from_dict(params).resolved(str(actual))
        recorder.set_effective(config.to_dict())  # a stack that fails to open leaves these
        out_dir = settings.data_dir / "jobs" / job_id
        with open_stack(settings.data_dir, dataset) as stack:  # a derived dataset: its subset
            config = config.for_stack(stack.box, stack.pixel_size)
            recorder.set_effective(config.to_dict())  # and the mask diameter its box decides
            result = run_pipeline(
                stack,
                config,
                out_dir,
                on_event=recorder,
                on_notice=recorder.notice,
                command=["cryoclust", "worker", f"job={job_id}"],
            )
        return "succeeded", None, result.stopped and f"stopped: {result.stopped}"
    except JobCancelled:
        return "cancelled", None, None
    except (WorkerStopping, Superseded):
        raise
    except Exception as exc:
        log.exception("job %s failed", job_id)
        return "failed", failure_message(exc), None
