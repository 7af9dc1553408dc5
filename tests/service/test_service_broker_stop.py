"""The filesystem broker's transport (cryoclust/core/fs_transport.py): it delivers messages as
kombu's does, and once the worker is shutting down a long wait for messages ends at the next
poll instead of running its course (Celery waits 2 s per call, twice, after a stop signal)."""

from __future__ import annotations

import kombu
import pytest
from support.settings import make_settings

from cryoclust.core import fs_transport
from cryoclust.core.celery_app import ensure_broker_dirs, make_celery


@pytest.fixture
def app(tmp_path):
    settings = make_settings(tmp_path / "data")
    ensure_broker_dirs(settings)
    yield make_celery(settings), settings.QUEUE
    fs_transport._shutting_down.clear()  # the flag is per process: leave none behind


def test_the_filesystem_broker_uses_the_quick_stopping_transport_and_delivers(app):
    celery_app, queue_name = app
    queue = kombu.Queue(queue_name)
    received = []
    with celery_app.connection_for_write() as connection:
        assert isinstance(connection.transport, fs_transport.Transport)
        with connection.Producer() as producer:
            producer.publish({"n": 1}, routing_key=queue_name, declare=[queue], serializer="json")
        with connection.Consumer(queue, callbacks=[lambda body, message: received.append(body)]):
            connection.drain_events(timeout=10)
            assert received == [{"n": 1}]
            with pytest.raises(TimeoutError):  # nothing more: the wait runs its course
                connection.drain_events(timeout=1.2)


def test_a_wait_for_messages_ends_once_the_worker_is_shutting_down(app):
    celery_app, queue_name = app
    queue = kombu.Queue(queue_name)
    with celery_app.connection_for_read() as connection, connection.Consumer(queue, callbacks=[]):
        # What Celery's worker_shutting_down signal calls (not sent here: other receivers in this
        # process, the task module's among them, would take this process for a stopping worker).
        fs_transport._on_shutting_down()
        # An hour's wait on an empty queue ends at the next poll (the suite's timeout catches a hang).
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=3600)
