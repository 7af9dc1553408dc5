"""Datasets imported by path: their import root, main file and the fingerprint of their files.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("import_root", "import_main", "import_files")


def upgrade() -> None:
    op.add_column("datasets", sa.Column("import_root", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("import_main", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("import_files", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:  # SQLite drops columns by copying the table
        for name in reversed(COLUMNS):
            batch.drop_column(name)
