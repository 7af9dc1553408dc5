"""The database on SQLite and PostgreSQL: Alembic migrations at start-up (a fresh database, one
made by the previous release, one upgraded by a newer cryoclust) and the row lock that lets only
one worker claim a job."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session
from support.databases import postgres_schema
from support.settings import child_env, make_settings

from cryoclust.core import jobstate, schema
from cryoclust.core.db import Database, make_engine
from cryoclust.core.tables import Base, Dataset, Job, JobEvent, Worker

DATA = Path(__file__).resolve().parents[1] / "data"
FUTURE = "ffff_from_a_newer_cryoclust"


def url_of(db_url: str, tmp_path: Path) -> str:
    return db_url or f"sqlite:///{tmp_path / 'cryoclust.db'}"


def differences(engine: sa.Engine) -> list:
    """What Alembic would change to make the database match tables.py (empty: they match)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return schema.current_revision(connection)


def test_fresh_database_is_migrated_to_the_tables_of_the_code(tmp_path, db_url):
    db = Database(url_of(db_url, tmp_path))
    try:
        assert revision(db.engine) == schema.head_revision()
        assert differences(db.engine) == []
        # A second start finds it at head and changes nothing.
        Database(db.url).dispose()
        assert revision(db.engine) == schema.head_revision()
    finally:
        db.dispose()


def test_first_revision_writes_exactly_the_tables_of_the_first_release(tmp_path):
    """SQLite keeps each table's CREATE statement: revision 0001 writes the same text as the
    first release's create_all did (frozen in tests/data), and head the same as today's code."""

    def ddl(url: str) -> list:
        with sa.create_engine(url).connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE '%alembic%' ORDER BY name"
                )
            ).all()
        return [tuple(row) for row in rows]

    first, released = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'released.db'}"
    with sa.create_engine(first).begin() as connection:
        command.upgrade(schema.alembic_config(connection), "0001")
    engine = sa.create_engine(released)
    with engine.begin() as connection:
        sql = (DATA / "schema_0.1.0_sqlite.sql").read_text()
        code = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
        for statement in filter(str.strip, code.split(";")):
            connection.exec_driver_sql(statement)
    engine.dispose()
    assert ddl(first) == ddl(released)
    assert len(ddl(first)) >= 7  # four tables, three indexes

    head, created = f"sqlite:///{tmp_path / 'head.db'}", f"sqlite:///{tmp_path / 'created.db'}"
    Database(head).dispose()
    engine = sa.create_engine(created)
    Base.metadata.create_all(engine)
    engine.dispose()
    assert [row[:2] for row in ddl(head)] == [row[:2] for row in ddl(created)]
    assert differences(sa.create_engine(head)) == []


def previous_release_database(url: str) -> None:
    """The tables as cryoclust 0.1.0 made them (no alembic_version), with two datasets, three jobs
    in different states, their events and a worker."""
    engine = make_engine(url)
    sql = (DATA / f"schema_0.1.0_{engine.dialect.name}.sql").read_text()
    with engine.begin() as connection:
        code = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
        for statement in code.split(";"):
            if statement.strip():
                connection.exec_driver_sql(statement)
    when = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    with Session(engine) as session:
        # Only the columns of that release (today's Dataset has more).
        old_columns = (
            "id",
            "name",
            "path",
            "files",
            "n_particles",
            "box_size",
            "pixel_size",
            "mode",
            "size_bytes",
            "sha256",
            "has_ctf",
            "created_at",
        )
        datasets = sa.table("datasets", *(sa.column(c, Dataset.__table__.c[c].type) for c in old_columns))
        session.execute(
            sa.insert(datasets),
            [
                {
                    "id": f"data{i}",
                    "name": f"stack {i}",
                    "path": "p.mrcs",
                    "files": ["p.mrcs"],
                    "n_particles": 100,
                    "box_size": 64,
                    "pixel_size": 1.5,
                    "mode": 2,
                    "size_bytes": 1_000_000,
                    "sha256": "0" * 64,
                    "has_ctf": bool(i),
                    "created_at": when,
                }
                for i in range(2)
            ],
        )
        session.flush()
        statuses = {"job_done": "succeeded", "job_queued": "queued", "job_failed": "failed"}
        for job_id, status in statuses.items():
            session.add(
                Job(
                    id=job_id,
                    dataset_id="data0",
                    status=status,
                    params={"cluster_num": 4, "method": "invariant"},
                    round=2,
                    round_num=2,
                    rounds_done=2 if status == "succeeded" else 0,
                    progress=1.0 if status == "succeeded" else 0.0,
                    created_at=when,
                    finished_at=when + timedelta(minutes=5) if status != "queued" else None,
                    error="worker lost 3 times" if status == "failed" else None,
                    cancel_requested=False,
                    attempts=1,
                )
            )
        session.flush()
        for k in range(5):
            session.add(
                JobEvent(job_id="job_done", kind="loss", data={"loss": 1.0 / (k + 1)}, created_at=when)
            )
        session.add(Worker(name="cpu-1@old-host", device="cpu", queue="cryoclust", seen_at=when))
        session.commit()
    engine.dispose()


def test_database_of_the_previous_release_is_upgraded_and_keeps_its_jobs(tmp_path, db_url):
    url = url_of(db_url, tmp_path)
    previous_release_database(url)
    engine = make_engine(url)
    assert revision(engine) is None
    db = Database(url)
    try:
        assert revision(engine) == schema.head_revision()
        assert differences(engine) == []
        with db.session() as session:
            jobs = {job.id: job for job in session.scalars(sa.select(Job))}
            assert {j: job.status for j, job in jobs.items()} == {
                "job_done": "succeeded",
                "job_queued": "queued",
                "job_failed": "failed",
            }
            assert jobs["job_done"].params == {"cluster_num": 4, "method": "invariant"}
            assert jobs["job_done"].finished_at == datetime(2025, 3, 1, 12, 5, tzinfo=timezone.utc)
            assert jobs["job_failed"].error == "worker lost 3 times"
            assert session.scalar(sa.select(sa.func.count()).select_from(Dataset)) == 2
            assert session.get(Dataset, "data1").has_ctf is True
            old_events = session.scalars(sa.select(JobEvent.id).order_by(JobEvent.id)).all()
            assert len(old_events) == 5
            assert session.get(Worker, "cpu-1@old-host").device == "cpu"
            # The upgraded database takes new rows: a worker claims the queued job and its event
            # id follows the old ones.
            claimed = jobstate.claim(session, "job_queued", "new-worker", "cpu", stale_after=60)
            assert claimed is not None and claimed.status == "running"
            newest = session.scalar(sa.select(sa.func.max(JobEvent.id)))
            assert newest > old_events[-1]
    finally:
        db.dispose()
        engine.dispose()


def test_newer_schema_is_refused_in_one_line_and_left_alone(tmp_path, db_url):
    url = url_of(db_url, tmp_path)
    Database(url).dispose()
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    with pytest.raises(
        schema.SchemaTooNew, match=f"schema revision {FUTURE}, newer than this cryoclust knows"
    ):
        Database(url)
    settings = make_settings(tmp_path / "data", DATABASE_URL=url)
    for argv in (["worker", "--quiet"], ["serve", "--no-worker", "--port", "9"]):
        done = subprocess.run(
            [sys.executable, "-m", "cryoclust", *argv],
            env=child_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, (argv, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"cryoclust {argv[0]}: error: "), done.stderr
        assert FUTURE in lines[0] and "upgrade cryoclust" in lines[0]
    assert revision(engine) == FUTURE
    with engine.connect() as connection:  # nothing was dropped or created
        assert connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 0
    engine.dispose()


# ----------------------------------------------------------------------------- claim race


def test_two_workers_racing_for_a_job_on_postgresql_exactly_one_wins(tmp_path):
    """Two real sessions, on two connections, claim the same queued job. The first holds its row
    lock a while (as a slow network would); the second must wait for it, see the job running on a
    live worker and give up. Without the lock both would read "queued" and both would run it."""
    with postgres_schema() as url:
        Database(url).dispose()
        setup = make_engine(url)
        with Session(setup) as session:
            session.add(
                Dataset(
                    id="d",
                    name="d",
                    path="p.mrcs",
                    files=["p.mrcs"],
                    n_particles=10,
                    box_size=8,
                    pixel_size=1.0,
                    size_bytes=1,
                    sha256="0" * 64,
                )
            )
            session.add(Job(id="race", dataset_id="d", params={}, round_num=1))
            session.commit()

        first_locked = threading.Event()
        engines = [make_engine(url), make_engine(url)]

        @sa.event.listens_for(engines[0], "after_cursor_execute")
        def _hold_the_row(_conn, _cursor, statement, *_args) -> None:
            if "FOR UPDATE" in statement:
                first_locked.set()
                time.sleep(1.0)

        results: dict[str, object] = {}
        took: dict[str, float] = {}

        def contend(name: str, engine: sa.Engine) -> None:
            if name == "second":
                assert first_locked.wait(20)
            start = time.monotonic()
            with Session(engine, expire_on_commit=False) as session:
                job = jobstate.claim(session, "race", name, "cpu", stale_after=60)
                results[name] = job.worker if job else None
            took[name] = time.monotonic() - start

        threads = [
            threading.Thread(target=contend, args=(name, engine))
            for name, engine in zip(("first", "second"), engines)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == {"first": "first", "second": None}
        assert took["second"] > 0.5, "the second claim did not wait for the row lock"
        with Session(setup) as session:
            job = session.get(Job, "race")
            assert (job.status, job.worker, job.attempts) == ("running", "first", 1)
            running = session.scalars(sa.select(JobEvent).where(JobEvent.job_id == "race")).all()
            assert [e.data["status"] for e in running] == ["running"]
        for engine in (*engines, setup):
            engine.dispose()
