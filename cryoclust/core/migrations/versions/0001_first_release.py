"""The schema of the first release: datasets, jobs, job_events, workers.

Databases made before migrations existed (by create_all, with no alembic_version table) already
hold some or all of these tables: this revision creates only the missing ones, so upgrading such
a database keeps its rows.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[sa.Table]:
    meta = sa.MetaData()
    when = sa.DateTime(timezone=True)
    datasets = sa.Table(
        "datasets",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("n_particles", sa.Integer(), nullable=False),
        sa.Column("box_size", sa.Integer(), nullable=False),
        sa.Column("pixel_size", sa.Float(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("has_ctf", sa.Boolean(), nullable=False),
        sa.Column("created_at", when, nullable=False),
    )
    jobs = sa.Table(
        "jobs",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("round_num", sa.Integer(), nullable=False),
        sa.Column("rounds_done", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("started_at", when, nullable=True),
        sa.Column("finished_at", when, nullable=True),
        sa.Column("heartbeat_at", when, nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("device", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Index("ix_jobs_dataset_id", "dataset_id"),
        sa.Index("ix_jobs_status", "status"),
    )
    job_events = sa.Table(
        "job_events",
        meta,
        # AUTOINCREMENT on SQLite: ids are never reused, so Last-Event-ID stays meaningful.
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Index("ix_job_events_job_id", "job_id"),
        sqlite_autoincrement=True,
    )
    workers = sa.Table(
        "workers",
        meta,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("seen_at", when, nullable=False),
    )
    return [datasets, jobs, job_events, workers]


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in _tables():  # parents first, for the foreign keys
        if table.name not in existing:
            table.create(bind)


def downgrade() -> None:
    for table in reversed(_tables()):
        op.drop_table(table.name)
