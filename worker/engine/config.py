"""Parameters of a classification run, as plain frozen dataclasses (never the web settings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

METHODS = ("reference", "invariant")


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
    method: str = "reference"
    # Options beyond the reference method; the reference method ignores them.
    phase_flip: bool = True
    align_averages: bool = False

    def __post_init__(self) -> None:
        checks = {
            "cluster_num": self.cluster_num >= 2,
            "learning_rate": 0 < self.learning_rate <= 1,
            "epoch_num": self.epoch_num >= 1,
            "batch_size": self.batch_size >= 2,
            "round_num": self.round_num >= 1,
            "size": 8 <= self.size <= 512 and self.size % 2 == 0,
            "method": self.method in METHODS,
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
