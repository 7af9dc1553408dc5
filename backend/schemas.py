"""Pydantic models of the REST API (what the OpenAPI spec at /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RoundRef = int | Literal["final"]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str
    workers: list[str]


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    n_particles: int
    box_size: int
    pixel_size: float
    mode: int | None
    size_bytes: int
    sha256: str = Field(description="sha256 of the file, or of `sha256sum` lines of all files")
    files: list[str]
    created_at: datetime
    has_ctf: bool


class JobParams(BaseModel):
    """The algorithm's parameters (defaults of the original program)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["reference", "invariant", "pose", "pose-em"] = "pose"
    cluster_num: int = Field(4, ge=2, le=1000)
    learning_rate: float = Field(5e-4, gt=0, le=1)
    epoch_num: int = Field(20, ge=1, le=1000)
    batch_size: int = Field(128, ge=2, le=65536)
    round_num: int = Field(5, ge=1, le=100)
    size: int = Field(64, ge=8, le=512, description="model image size in pixels (even)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str | None = Field(
        None,
        pattern=r"^(cpu|cuda(:[0-9]{1,2})?|mps)$",
        description="cpu, cuda or cuda:N; empty: the worker's own device",
    )
    phase_flip: bool = True
    align_averages: bool = False

    @model_validator(mode="after")
    def _even_size(self) -> "JobParams":
        if self.size % 2:
            raise ValueError(f"size must be even, got {self.size}")
        return self


class JobCreate(JobParams):
    dataset_id: str = Field(min_length=1, max_length=32)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    status: JobStatus
    params: dict
    round: int
    round_num: int
    progress: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    device: str | None
    error: str | None
    rounds_done: int
    attempts: int


class LossPointOut(BaseModel):
    step: int
    pairs_done: int
    epoch: int
    loss: float


class RoundLoss(BaseModel):
    round: int
    points: list[LossPointOut]


class LossOut(BaseModel):
    rounds: list[RoundLoss]


class EmbeddingOut(BaseModel):
    x: list[float]
    y: list[float]
    labels: list[int] = Field(description="class of each particle, 1-based")


class ClassOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    class_: int = Field(alias="class")
    count: int
    fraction: float
    quality: float | None = None


class MembersOut(BaseModel):
    total: int
    indices: list[int]


class SubsetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: RoundRef = "final"
    classes: list[int] = Field(min_length=1, max_length=1000)
    format: Literal["star", "mrcs"] = "star"
