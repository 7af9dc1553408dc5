"""Heartbeats of a worker process: its row in `workers` and the heartbeat of its running job.

A thread beats every HEARTBEAT_SECONDS, also while the engine is busy between events (KMeans,
preprocessing), so the API can tell a slow job from a lost worker.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import delete, update

from cryoclust.core.db import Database
from cryoclust.core.tables import Job, Worker, utcnow

log = logging.getLogger("cryoclust.worker")


class Heartbeat:
    def __init__(self, db: Database, name: str, device: str, queue: str, interval: float) -> None:
        self.db = db
        self.name = name
        self.device = device
        self.queue = queue
        self.interval = interval
        self.job_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        now = utcnow()
        with self.db.session() as session:
            worker = session.get(Worker, self.name)
            if worker is None:
                session.add(
                    Worker(
                        name=self.name, device=self.device, queue=self.queue, job_id=self.job_id, seen_at=now
                    )
                )
            else:
                worker.device, worker.queue, worker.job_id, worker.seen_at = (
                    self.device,
                    self.queue,
                    self.job_id,
                    now,
                )
            if self.job_id:
                session.execute(
                    update(Job)
                    .where(Job.id == self.job_id, Job.status == "running", Job.worker == self.name)
                    .values(heartbeat_at=now)
                )
            session.commit()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # the database may be briefly away; keep beating
                log.warning("heartbeat failed: %s", exc)

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="cryoclust-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            with self.db.session() as session:
                session.execute(delete(Worker).where(Worker.name == self.name))
                session.commit()
        except Exception as exc:
            log.warning("cannot remove worker row: %s", exc)
