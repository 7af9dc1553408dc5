"""Choosing the compute device: the requested GPU when there is one, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(requested: str) -> tuple[torch.device, str | None]:
    """Return the device to use and, when it differs from the request, a notice saying why."""
    requested = (requested or "cpu").strip()
    if requested == "cpu":
        return torch.device("cpu"), None
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {requested!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return torch.device("cpu"), f"no CUDA GPU available; {requested} falls back to cpu"
        if (device.index or 0) >= torch.cuda.device_count():
            return torch.device(
                "cpu"
            ), f"{requested} does not exist ({torch.cuda.device_count()} GPUs); using cpu"
        return device, None
    if device.type == "mps" and not torch.backends.mps.is_available():
        return torch.device("cpu"), f"{requested} is not available; using cpu"
    return device, None
