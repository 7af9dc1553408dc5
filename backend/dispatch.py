"""Sending jobs to the workers by task name, and checking that the broker answers.

The API never imports the task code (nor torch): it only names the task "classify".
"""

from __future__ import annotations

import time

from cryoclust.core.celery_app import TASK_CLASSIFY, ensure_broker_dirs, make_celery
from cryoclust.core.settings import Settings


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._celery = None
        self._checked: tuple[float, str] | None = None

    @property
    def celery(self):
        if self._celery is None:
            ensure_broker_dirs(self.settings)
            self._celery = make_celery(self.settings)
        return self._celery

    def send(self, job_id: str) -> None:
        """Queue job `job_id`; raises OSError (or kombu's errors) when the broker is down."""
        self.celery.send_task(TASK_CLASSIFY, args=[job_id], queue=self.settings.QUEUE)

    def check(self, cache_seconds: float = 5.0) -> str:
        """'ok' or the broker's error in a few words (cached: health is polled)."""
        now = time.monotonic()
        if self._checked and now - self._checked[0] < cache_seconds:
            return self._checked[1]
        try:
            if self.settings.uses_filesystem_broker:
                ensure_broker_dirs(self.settings)
                result = "ok"
            else:
                with self.celery.connection_for_write() as connection:
                    connection.ensure_connection(max_retries=1, timeout=2)
                result = "ok"
        except Exception as exc:  # any transport error means "down"; say which
            result = f"error: {type(exc).__name__}: {exc}"[:300]
        self._checked = (now, result)
        return result

    def close(self) -> None:
        if self._celery is not None:
            self._celery.close()
