"""The CTF on the particles' device, with torch: the pose search's CTFs and the phase flip.

The CTF's phase is a sum of per-particle terms times powers of the frequency (worker.engine.ctf
has the formula and the conventions). Writing the astigmatic defocus as
dz(phi) = mean + half_diff (cos 2phi cos 2theta + sin 2phi sin 2theta), the phase of every
particle of a batch at every frequency is one matrix product:

    gamma = terms (B x T) @ powers (T x S*F)

terms:  pi lambda mean, pi lambda half_diff cos 2theta, pi lambda half_diff sin 2theta,
        pi/2 Cs lambda^3, asin(Q) + phase shift
powers: k^2, k^2 cos 2phi, k^2 sin 2phi, -k^4, 1

(isotropic: the first, fourth and fifth only). Both are float64, as ctf.ctf_values computes,
so the values agree with it; nothing per batch goes through the host.
"""

from __future__ import annotations

import numpy as np
import torch

from worker.engine.ctf import CtfParams, frequency_grid, wavelength


def _terms(ctf: CtfParams, isotropic: bool) -> np.ndarray:
    f64 = np.float64
    lam = wavelength(np.asarray(ctf.voltage, dtype=f64))
    cs = np.asarray(ctf.spherical_aberration, dtype=f64) * 1e7  # mm -> Å
    du, dv = np.asarray(ctf.defocus_u, dtype=f64), np.asarray(ctf.defocus_v, dtype=f64)
    mean, half = (du + dv) / 2, (du - dv) / 2
    q = np.clip(np.asarray(ctf.amplitude_contrast, dtype=f64), 0.0, 0.999)
    constant = np.arcsin(q) + np.deg2rad(np.asarray(ctf.phase_shift, dtype=f64))
    if isotropic:
        columns = [np.pi * lam * mean, 0.5 * np.pi * cs * lam**3, constant]
    else:
        angle = 2 * np.deg2rad(np.asarray(ctf.defocus_angle, dtype=f64))
        columns = [
            np.pi * lam * mean,
            np.pi * lam * half * np.cos(angle),
            np.pi * lam * half * np.sin(angle),
            0.5 * np.pi * cs * lam**3,
            constant,
        ]
    return np.stack(np.broadcast_arrays(*columns), 1)


def _powers(size: int, pixel_size: float, isotropic: bool) -> np.ndarray:
    kx, ky = frequency_grid(size, pixel_size)
    k2 = (kx**2 + ky**2).reshape(-1)
    if isotropic:
        return np.stack([k2, -(k2**2), np.ones_like(k2)])
    phi = 2 * np.arctan2(ky, kx).reshape(-1)
    return np.stack([k2, k2 * np.cos(phi), k2 * np.sin(phi), -(k2**2), np.ones_like(k2)])


class ParticleCtfs:
    """Each particle's isotropic CTF on the rfft2 grid of `size`, read as (N, S, S//2+1) slices.

    Computed slice by slice when read, never stored whole: at a million particles a stored copy
    would take 2.2 GB at 32 px and 8.7 GB at 64 px, while a batch's CTFs cost a small fraction of
    the batch's scoring. Isotropic at the mean defocus (the likelihood's model, see
    worker.engine.likelihood). Phase-flipped particles carry |CTF|; without CTF parameters every
    value is 1.
    """

    def __init__(
        self, ctf: CtfParams | None, n: int, size: int, pixel_size: float, flipped: bool, device=None
    ) -> None:
        self.n, self.size, self.flipped, self.device = n, size, flipped, device
        self.terms = None if ctf is None else torch.as_tensor(_terms(ctf, isotropic=True), device=device)
        self.powers = torch.as_tensor(_powers(size, pixel_size, isotropic=True), device=device)

    def __len__(self) -> int:
        return self.n

    def take(self, index: np.ndarray) -> ParticleCtfs:
        """The CTFs of the particles at `index`, in that order."""
        taken = ParticleCtfs(None, len(index), self.size, 1.0, self.flipped, self.device)
        taken.powers = self.powers
        if self.terms is not None:
            taken.terms = self.terms[torch.as_tensor(np.asarray(index), device=self.terms.device)]
        return taken

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice):
            raise TypeError("ParticleCtfs are read as slices, e.g. ctfs[start:stop]")
        if self.terms is None:
            picked = range(self.n)[rows]
            return torch.ones((len(picked), self.size, self.size // 2 + 1), device=self.device)
        values = torch.sin_(self.terms[rows] @ self.powers).float()
        values = values.reshape(-1, self.size, self.size // 2 + 1)
        return values.abs_() if self.flipped else values


class PhaseFlipper:
    """Flips the phases of (B, box, box) float32 batches of a stack by the sign of each
    particle's (astigmatic) CTF, on the batch's device: preprocess's `before_normalise` hook."""

    def __init__(self, ctf: CtfParams, pixel_size: float, box: int, device=None) -> None:
        self.box = box
        self.terms = torch.as_tensor(_terms(ctf, isotropic=False), device=device)
        self.powers = torch.as_tensor(_powers(box, pixel_size, isotropic=False), device=device)

    def __call__(self, images: torch.Tensor, rows: slice) -> torch.Tensor:
        gamma = self.terms[rows].to(images.device) @ self.powers.to(images.device)
        sign = torch.where(torch.sin_(gamma) < 0, -1.0, 1.0).to(images.dtype)
        spectrum = torch.fft.rfft2(images) * sign.reshape(-1, self.box, self.box // 2 + 1)
        return torch.fft.irfft2(spectrum, s=(self.box, self.box))
