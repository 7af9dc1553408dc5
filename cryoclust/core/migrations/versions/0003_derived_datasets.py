"""Datasets know whether their pixel size is known, and derived datasets where they came from.

A derived dataset (clean and reclassify) is a subset of another dataset's files by index: its
parent, the dataset whose files it reads (base), and the job, round and classes that chose it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("pixel_size_known", "parent_id", "base_id", "source_job_id", "source_round", "source_classes")


def upgrade() -> None:
    # Datasets uploaded before this revision keep showing their pixel size as they did.
    op.add_column(
        "datasets", sa.Column("pixel_size_known", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.add_column("datasets", sa.Column("parent_id", sa.String(32), nullable=True))
    op.add_column("datasets", sa.Column("base_id", sa.String(32), nullable=True))
    op.add_column("datasets", sa.Column("source_job_id", sa.String(32), nullable=True))
    op.add_column("datasets", sa.Column("source_round", sa.Integer(), nullable=True))
    op.add_column("datasets", sa.Column("source_classes", sa.JSON(), nullable=True))
    op.create_index("ix_datasets_parent_id", "datasets", ["parent_id"])
    op.create_index("ix_datasets_base_id", "datasets", ["base_id"])


def downgrade() -> None:
    op.drop_index("ix_datasets_base_id", table_name="datasets")
    op.drop_index("ix_datasets_parent_id", table_name="datasets")
    with op.batch_alter_table("datasets") as batch:  # SQLite drops columns by copying the table
        for name in reversed(COLUMNS):
            batch.drop_column(name)
