"""Contrast transfer function parameters carried by RELION star files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CtfParams:
    """Per-particle CTF parameters (arrays of length N; RELION units: Å, degrees, kV, mm)."""

    defocus_u: np.ndarray
    defocus_v: np.ndarray
    defocus_angle: np.ndarray
    voltage: np.ndarray
    spherical_aberration: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift: np.ndarray  # degrees; zeros when the star has none

    def subset(self, index: np.ndarray) -> "CtfParams":
        return CtfParams(**{k: np.asarray(v)[index] for k, v in self.__dict__.items()})
