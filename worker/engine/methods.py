"""Classification methods, selectable by name (`--method`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from worker.engine.config import METHODS, ClassifyConfig
from worker.engine.events import Callback


class Method(Protocol):
    name: str

    def train_round(
        self,
        images: torch.Tensor,
        labels: np.ndarray,
        config: ClassifyConfig,
        round_index: int,
        generator: torch.Generator,
        on_event: Callback,
    ) -> tuple[np.ndarray, dict]:
        """Train on (N, 1, S, S) images with current labels; return embeddings and state."""
        ...


def get_method(name: str) -> Method:
    if name == "reference":
        from worker.engine.train import ReferenceMethod

        return ReferenceMethod()
    if name == "invariant":
        from worker.engine.invariant import InvariantMethod

        return InvariantMethod()
    if name == "pose":
        from worker.engine.pose import PoseMethod

        return PoseMethod()
    if name == "pose-em":
        from worker.engine.pose import PoseMethod

        return PoseMethod(network=False)
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
