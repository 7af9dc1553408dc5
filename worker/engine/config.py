"""Parameters of a classification run: each defined once, here, and the engine's frozen config.

PARAMETERS carries every job parameter's type, default, range or choices, help text and, for
the "auto" ones, the rule that decides them. Everything else is built from it: `ClassifyConfig`
below (defaults and checks), the API schema (backend/schemas.py), the command line
(commands/classify.py) and the page's form (GET /api/parameters). A default or a range changes
here and nowhere else; adding a method is one word in METHODS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

METHODS = ("reference", "invariant", "pose", "pose-em")
PRECISIONS = ("fp32", "bf16")
STORAGES = ("float16", "float32")  # the preprocessed stack in memory
STORAGE_BYTES = {"float16": 2, "float32": 4}
# The one method that passes every bar (README "Benchmark of methods"); "reference" is the original.
DEFAULT_METHOD = "pose"
# The pose methods' class averages are masked with a soft circle this share of the box wide
# unless --mask-diameter says otherwise; the benchmark gives RELION the same diameter.
DEFAULT_MASK_FRACTION = 0.85
# A device asked for but missing falls back to cpu (worker/engine/devices.py).
DEFAULT_DEVICE = "cuda:0"
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]{1,2})?|mps)$"
# The default of an "auto" parameter: decided by the rule in its `auto` text when a run starts.
AUTO = None


def _on_unless_reference(values: dict) -> bool:
    # The options beyond the reference method stay off for it, so `--method reference` alone
    # reproduces the original program exactly.
    return values["method"] != "reference"


def _half_unless_reference(values: dict) -> str:
    # float16 halves the stack with no loss of accuracy measured (README, "Stack storage");
    # the reference method keeps the original's float32 pixels.
    return "float32" if values["method"] == "reference" else "float16"


@dataclass(frozen=True)
class Param:
    """One job parameter. `kind` is int, float, str or bool; None bounds mean unbounded."""

    name: str
    kind: type
    default: Any
    label: str
    help: str
    flags: tuple[str, ...] = ()  # command-line flags; empty: --<name>
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # exclusive minimum
    multiple_of: int | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    pattern_hint: str | None = None  # the pattern in words, for error messages
    auto: str | None = None  # what AUTO means, in words (only for default AUTO)
    resolve: Callable[[dict], Any] | None = None  # AUTO -> a value, from the other values
    examples: tuple[str, ...] = ()

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or (f"--{self.name}",)

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, in a few words; None when it is."""
        if value is AUTO:
            return None if self.default is AUTO else "a value is needed"
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "must be a number"
            if self.kind is int and value != int(value):
                return "must be a whole number"
            if self.minimum is not None and value < self.minimum:
                return f"at least {self.minimum:g}"
            if self.maximum is not None and value > self.maximum:
                return f"at most {self.maximum:g}"
            if self.above is not None and value <= self.above:
                return f"must be above {self.above:g}"
            if self.multiple_of and value % self.multiple_of:
                return (
                    "must be even" if self.multiple_of == 2 else f"must be a multiple of {self.multiple_of}"
                )
            return None
        if not isinstance(value, str):
            return "must be text"
        if self.choices is not None and value not in self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.pattern is not None and not re.match(self.pattern, value):
            return self.pattern_hint or f"must match {self.pattern}"
        return None

    def describe(self) -> str:
        """The help text with the default (or the auto rule), as the CLI and OpenAPI show it."""
        if self.default is AUTO:
            return f"{self.help} Default: auto ({self.auto})."
        if self.kind is bool:
            return f"{self.help} Default: {'on' if self.default else 'off'}."
        return (
            f"{self.help} Default: {self.default!r}."
            if self.kind is str
            else f"{self.help} Default: {self.default:g}."
        )

    def to_json(self) -> dict:
        """The definition as the page reads it from GET /api/parameters."""
        kinds = {int: "integer", float: "number", str: "string", bool: "boolean"}
        return {
            "name": self.name,
            "type": kinds[self.kind],
            "default": self.default,
            "label": self.label,
            "help": self.help,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "exclusive_minimum": self.above,
            "multiple_of": self.multiple_of,
            "choices": list(self.choices) if self.choices else None,
            "pattern": self.pattern,
            "pattern_hint": self.pattern_hint,
            "auto": self.auto,
            "examples": list(self.examples) or None,
        }


PARAMETERS: tuple[Param, ...] = (
    Param(
        "method",
        str,
        DEFAULT_METHOD,
        "Method",
        choices=METHODS,
        help="pose: likelihood search over class, in-plane angle and shift with the CTF, then the "
        "Siamese network on the aligned particles; pose-em: the same without the network; "
        "reference: the original Siamese network + KMeans; invariant: rotation/shift-invariant "
        "profiles + KMeans.",
    ),
    Param(
        "cluster_num",
        int,
        4,
        "Classes",
        flags=("-c", "--cluster_num"),
        minimum=2,
        maximum=1000,
        help="Number of 2D classes (KMeans k), at most the number of particles.",
    ),
    Param(
        "learning_rate",
        float,
        5e-4,
        "Learning rate",
        flags=("-l", "--learning_rate"),
        above=0,
        maximum=1,
        help="Adam step size of the network.",
    ),
    Param(
        "epoch_num",
        int,
        20,
        "Epochs",
        flags=("-e", "--epoch_num"),
        minimum=1,
        maximum=1000,
        help="Training epochs per round; one epoch is N image pairs.",
    ),
    Param(
        "batch_size",
        int,
        128,
        "Batch size",
        flags=("-b", "--batch_size"),
        minimum=2,
        maximum=65536,
        help="Image pairs per training step (batch normalisation needs 2).",
    ),
    Param(
        "round_num",
        int,
        5,
        "Rounds",
        flags=("-r", "--round_num"),
        minimum=0,
        maximum=100,
        help="Train-then-cluster rounds; each trains a fresh network on the last labels. 0 gives "
        "a quick first look: the initial classes (PCA + KMeans) with their averages, as round 0.",
    ),
    Param(
        "stop_when_churn_below",
        float,
        0.0,
        "Stop when churn below",
        flags=("--stop-when-churn-below",),
        minimum=0,
        maximum=1,
        help="End the rounds early once the share of particles that changed class in a round "
        "falls below this (e.g. 0.01); 0 runs every round.",
    ),
    Param(
        "size",
        int,
        64,
        "Model size (px)",
        minimum=8,
        maximum=512,
        multiple_of=2,
        help="Images are Fourier-cropped to this even size before training.",
    ),
    Param(
        "seed",
        int,
        0,
        "Random seed",
        minimum=0,
        maximum=2**31 - 1,
        help="Same seed, same data and same device give the same classes.",
    ),
    Param(
        "device",
        str,
        AUTO,
        "Device",
        flags=("-g", "--gpu", "--device"),
        pattern=DEVICE_PATTERN,
        pattern_hint="cpu, cuda or cuda:N",
        examples=("cuda:0", "cuda:1", "cpu"),
        auto=f"{DEFAULT_DEVICE} from the command line, the worker's CRYOCLUST_DEVICE for a job",
        resolve=lambda values: DEFAULT_DEVICE,
        help="cpu, cuda or cuda:N; a GPU that is missing falls back to cpu.",
    ),
    Param(
        "precision",
        str,
        "fp32",
        "Precision",
        choices=PRECISIONS,
        help="Network arithmetic; bf16 autocasts the network for speed.",
    ),
    Param(
        "storage",
        str,
        AUTO,
        "Stack storage",
        choices=STORAGES,
        auto="float16 unless the method is reference",
        resolve=_half_unless_reference,
        help="Precision of the preprocessed stack in memory; float16 halves it (each batch is "
        "computed in float32).",
    ),
    Param(
        "phase_flip",
        bool,
        AUTO,
        "Phase flip (CTF)",
        flags=("--phase-flip",),
        auto="on unless the method is reference",
        resolve=_on_unless_reference,
        help="Flip phases with the CTF from the .star before training (needs defocus columns).",
    ),
    Param(
        "align_averages",
        bool,
        AUTO,
        "Aligned averages",
        flags=("--align",),
        auto="on unless the method is reference",
        resolve=_on_unless_reference,
        help="Align members in-plane before averaging, for sharper class averages.",
    ),
    Param(
        "mask_diameter",
        float,
        AUTO,
        "Mask diameter (Å)",
        flags=("--mask-diameter",),
        above=0,
        maximum=100000,
        auto=f"{DEFAULT_MASK_FRACTION:.0%} of the box",
        help="Diameter of the soft circular mask on the pose methods' class averages, as "
        "RELION's --particle_diameter: a little wider than the particle. Outside it an average "
        "holds only noise.",
    ),
    Param(
        "umap",
        bool,
        True,
        "UMAP view",
        help="Also lay the last round's embedding out with UMAP for the page (fitted on 20,000 "
        "particles, the rest placed onto it); off saves its seconds (README, UMAP view).",
    ),
)
BY_NAME = {p.name: p for p in PARAMETERS}


def default(name: str) -> Any:
    return BY_NAME[name].default


@dataclass(frozen=True)
class ClassifyConfig:
    """Every knob of a run; defaults and checks come from PARAMETERS (None: auto)."""

    method: str = default("method")
    cluster_num: int = default("cluster_num")
    learning_rate: float = default("learning_rate")
    epoch_num: int = default("epoch_num")
    batch_size: int = default("batch_size")
    round_num: int = default("round_num")
    stop_when_churn_below: float = default("stop_when_churn_below")
    size: int = default("size")
    seed: int = default("seed")
    device: str = DEFAULT_DEVICE  # the engine's "auto" device; the worker passes its own
    precision: str = default("precision")
    storage: str | None = default("storage")
    phase_flip: bool | None = default("phase_flip")
    align_averages: bool | None = default("align_averages")
    mask_diameter: float | None = default("mask_diameter")
    umap: bool = default("umap")

    def __post_init__(self) -> None:
        problems = {p.name: p.problem(getattr(self, p.name)) for p in PARAMETERS}
        bad = {name: text for name, text in problems.items() if text}
        if bad:
            detail = ", ".join(f"{name}={getattr(self, name)!r} ({text})" for name, text in bad.items())
            raise ValueError(f"invalid classification parameters: {detail}")

    @property
    def flips_phase(self) -> bool:
        return self.resolved().phase_flip

    @property
    def aligns_averages(self) -> bool:
        return self.resolved().align_averages

    def resolved(self, device: str | None = None) -> ClassifyConfig:
        """The effective parameters: every "auto" decided, `device` (the one really used) set."""
        values = self.to_dict()
        if device is not None:
            values["device"] = device
        for p in PARAMETERS:
            if values[p.name] is AUTO and p.resolve is not None:
                values[p.name] = p.resolve(values)
        return replace(self, **values)

    def for_stack(self, box: int, pixel_size: float) -> ClassifyConfig:
        """With the one "auto" that the data decides set as well: the mask diameter,
        DEFAULT_MASK_FRACTION of a box of `box` px at `pixel_size` Å (to 0.1 Å)."""
        if self.mask_diameter is not None:
            return self
        return replace(self, mask_diameter=round(DEFAULT_MASK_FRACTION * box * pixel_size, 1))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClassifyConfig:
        """A config from a job's parameters; unknown keys are ignored, None means auto."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("device") is AUTO:
            values.pop("device", None)
        return cls(**values)
