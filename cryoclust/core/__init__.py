"""The shared core of the service: settings, database session and tables with their migrations
(schema.py runs them at start-up), job state, worker heartbeats, and the Celery application with
its task names.

Both the API (backend/) and the worker's task modules (worker/tasks.py, worker/run.py) build on
this package; it never imports either of them, nor torch. See docs/architecture.md.
"""
