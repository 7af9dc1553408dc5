"""Database tables: datasets, jobs, the events of each job, and the workers seen alive.

API models live in backend/schemas.py; these rows are what the API and the workers share.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running") + TERMINAL


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every database (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # Main input (.mrcs or .star), relative to the dataset's folder.
    path: Mapped[str] = mapped_column(String(300))
    files: Mapped[list] = mapped_column(JSON)
    n_particles: Mapped[int] = mapped_column(Integer)
    box_size: Mapped[int] = mapped_column(Integer)
    pixel_size: Mapped[float] = mapped_column(Float)
    mode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    has_ctf: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # False when neither the files nor the user said it: figures are then given per Nyquist.
    pixel_size_known: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # A derived dataset (clean and reclassify) is a subset of `base_id`'s files by index
    # (indices.npy in its own folder); `parent_id` is the dataset it was made from, and the
    # source_* columns say which job, round and classes chose its particles.
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    base_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    source_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source_round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_classes: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # A dataset imported by path reads files on the server's own storage, not copied: the import
    # root that confines it, its main file relative to that root, and the size and mtime of
    # every file it reads ({path, size, mtime_ns}), so a job notices files changed since.
    # A subset of an imported dataset carries the same three.
    import_root: Mapped[str | None] = mapped_column(Text, nullable=True)
    import_main: Mapped[str | None] = mapped_column(Text, nullable=True)
    import_files: Mapped[list | None] = mapped_column(JSON, nullable=True)

    @property
    def imported_from(self) -> str | None:
        """The absolute path of an imported dataset's main file; None for an upload."""
        if self.import_root is None:
            return None
        return f"{self.import_root.rstrip('/')}/{self.import_main}"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    params: Mapped[dict] = mapped_column(JSON)
    # What the worker really ran with (auto parameters decided, the device it used).
    effective_params: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    round: Mapped[int] = mapped_column(Integer, default=0)
    round_num: Mapped[int] = mapped_column(Integer)
    rounds_done: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Deliveries that started running it; a worker lost too often fails the job.
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class JobEvent(Base):
    __tablename__ = "job_events"
    # AUTOINCREMENT on SQLite: ids are never reused, so Last-Event-ID stays meaningful.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    device: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
