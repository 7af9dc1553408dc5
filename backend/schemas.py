"""Pydantic models of the REST API (what the OpenAPI spec at /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from worker.engine.config import AUTO, PARAMETERS, Param

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
    pixel_size_known: bool = Field(
        True,
        description="false when neither the files nor the upload said it: pixel_size is then a 1.0 stand-in",
    )
    parent_id: str | None = Field(None, description="the dataset this one was derived from")
    source_job_id: str | None = Field(None, description="the job whose classes chose the particles")
    source_round: int | None = None
    source_classes: list[int] | None = None
    imported_from: str | None = Field(
        None,
        description="an imported dataset's main file on the server (read in place, never copied); "
        "`files` are then relative to its import root",
    )


class DatasetImport(BaseModel):
    """A particle file already on the server, under one of CRYOCLUST_IMPORT_ROOTS."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="absolute path of a .mrcs/.mrc, or of a .star or cryoSPARC .cs whose stacks "
        "lie under the same import root",
    )
    name: str | None = Field(None, min_length=1, max_length=200)
    pixel_size: float | None = Field(
        None, gt=0, le=1000, description="Å per pixel, when the files do not say it"
    )


class DatasetFromUploads(BaseModel):
    """Finished resumable uploads (POST /api/uploads, tus) that make one dataset."""

    model_config = ConfigDict(extra="forbid")

    uploads: list[str] = Field(
        min_length=1, max_length=1000, description="the ids of the uploads (the end of their Location)"
    )
    name: str | None = Field(None, min_length=1, max_length=200)
    pixel_size: float | None = Field(
        None, gt=0, le=1000, description="Å per pixel, when the files do not say it"
    )


class SubsetDatasetCreate(BaseModel):
    """Particles for a derived dataset: a job's classes (job_id, round, classes) or indices."""

    model_config = ConfigDict(extra="forbid")

    job_id: str | None = Field(None, min_length=1, max_length=32)
    round: RoundRef = "final"
    classes: list[int] | None = Field(None, min_length=1, max_length=1000)
    indices: list[int] | None = Field(None, min_length=1, max_length=10_000_000)
    name: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_way(self) -> SubsetDatasetCreate:
        if (self.classes is None) == (self.indices is None):
            raise ValueError("give either classes (with job_id) or indices")
        if self.classes is not None and self.job_id is None:
            raise ValueError("classes need the job_id whose classes they are")
        return self


def _job_field(p: Param) -> tuple[Any, Any]:
    """A pydantic field from one parameter of the engine's definition."""
    annotation: Any = Literal[p.choices] if p.choices else p.kind
    if p.default is AUTO:
        annotation = annotation | None
    constraints = {
        "ge": p.minimum,
        "le": p.maximum,
        "gt": p.above,
        "multiple_of": p.multiple_of,
        "pattern": p.pattern,
    }
    description = p.describe() + (" Send null for auto." if p.default is AUTO else "")
    extra = {"x-auto": p.auto} if p.auto else None
    field = Field(
        p.default,
        title=p.label,
        description=description,
        json_schema_extra=extra,
        **{k: v for k, v in constraints.items() if v is not None},
    )
    return annotation, field


# Generated from worker/engine/config.py's PARAMETERS: the one place a default or range lives.
JobParams = create_model(
    "JobParams",
    __config__=ConfigDict(extra="forbid"),
    __doc__="The algorithm's parameters; null for an auto one lets the worker decide by its rule.",
    **{p.name: _job_field(p) for p in PARAMETERS},
)


class JobCreate(JobParams):
    dataset_id: str = Field(min_length=1, max_length=32)


class ParameterOut(BaseModel):
    """One job parameter as defined in the engine (what the page builds its form from)."""

    name: str
    type: Literal["integer", "number", "string", "boolean"]
    default: int | float | str | bool | None
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    multiple_of: int | None = None
    choices: list[str] | None = None
    pattern: str | None = None
    pattern_hint: str | None = None
    auto: str | None = Field(None, description="what null (auto) means for this parameter")
    examples: list[str] | None = None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    status: JobStatus
    params: dict = Field(description="the parameters as asked for (null: auto)")
    effective_params: dict | None = Field(
        None, description="the parameters the worker really used, every auto decided (null until it starts)"
    )
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
    quality: float | None = Field(
        None, description="FRC 0.5 resolution in Å; null when the pixel size is unknown"
    )
    quality_nyquist: float | None = Field(
        None,
        description="the same FRC figure as a fraction of Nyquist (1: up to Nyquist), known pixel size or not",
    )
    pixel_size_known: bool = True
    full_size: bool = Field(
        False,
        description="the round's averages (average.png, class_averages.mrcs) are at the input's box "
        "and pixel size (the last round of a finished job), not at the model size",
    )
    empty: bool = Field(
        False,
        description="the class given to the boxes that score no better than an empty box (ice, no "
        "particle): made in the last round of the pose methods when enough boxes look empty",
    )


class MembersOut(BaseModel):
    total: int
    indices: list[int]


class SubsetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: RoundRef = "final"
    classes: list[int] = Field(min_length=1, max_length=1000)
    format: Literal["star", "mrcs", "cs"] = "star"
