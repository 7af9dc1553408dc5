"""Parameters of a classification run, as plain frozen dataclasses (never the web settings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

METHODS = ("reference", "invariant", "pose", "pose-em")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ClassifyConfig:
    """Every knob of a run. Defaults are those of the original program (see DESIGN.md)."""

    cluster_num: int = 4
    learning_rate: float = 5e-4
    epoch_num: int = 20
    batch_size: int = 128
    round_num: int = 5
    size: int = 64
    seed: int = 0
    device: str = "cuda:0"
    method: str = "pose"  # the best measured (README "Methods"); "reference" is the original
    precision: str = "fp32"  # "bf16" autocasts the network for speed
    # Options beyond the reference method. None means: on for every method except the
    # reference method, so `method="reference"` alone reproduces the original exactly. The pose
    # methods always give their own CTF-weighted aligned averages (align_averages is not used).
    phase_flip: bool | None = None
    align_averages: bool | None = None

    @property
    def flips_phase(self) -> bool:
        return self.method != "reference" if self.phase_flip is None else self.phase_flip

    @property
    def aligns_averages(self) -> bool:
        return self.method != "reference" if self.align_averages is None else self.align_averages

    def __post_init__(self) -> None:
        checks = {
            "cluster_num": self.cluster_num >= 2,
            "learning_rate": 0 < self.learning_rate <= 1,
            "epoch_num": self.epoch_num >= 1,
            "batch_size": self.batch_size >= 2,
            "round_num": self.round_num >= 1,
            "size": 8 <= self.size <= 512 and self.size % 2 == 0,
            "method": self.method in METHODS,
            "precision": self.precision in PRECISIONS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid classification parameters: {values}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClassifyConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
