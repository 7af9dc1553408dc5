"""Contrast transfer function: parameters carried by RELION star files, the CTF itself, phase
flipping and Wiener-filtered averages.

Conventions follow RELION: defocus U/V in Å (positive = underfocus), the astigmatism angle in
degrees is the direction of defocus U measured from the x axis, voltage in kV, spherical
aberration Cs in mm, amplitude contrast as a fraction, phase shift in degrees. With these,

    CTF(k) = sin(pi * lambda * dz(phi) * |k|^2 - pi/2 * Cs * lambda^3 * |k|^4 + asin(Q) + ps)

so that the CTF is positive at low frequency for an underfocused image. numpy only (the
simulator and the upload checks use it without torch); everything is vectorised over particles
and done in chunks so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 1024  # particles per FFT batch: ~35 MB of complex64 at 64 px


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

    def subset(self, index: np.ndarray) -> CtfParams:
        return CtfParams(**{k: np.asarray(v)[index] for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return len(np.atleast_1d(self.defocus_u))

    @classmethod
    def uniform(
        cls,
        defocus_u,
        defocus_v=None,
        defocus_angle=0.0,
        voltage: float = 300.0,
        spherical_aberration: float = 2.7,
        amplitude_contrast: float = 0.1,
        phase_shift: float = 0.0,
    ) -> CtfParams:
        """Parameters for N particles from defocus arrays and scalar optics (broadcast to N)."""
        du = np.atleast_1d(np.asarray(defocus_u, dtype=np.float64))
        n = len(du)

        def full(value) -> np.ndarray:
            return np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()

        return cls(
            defocus_u=du,
            defocus_v=full(du if defocus_v is None else defocus_v),
            defocus_angle=full(defocus_angle),
            voltage=full(voltage),
            spherical_aberration=full(spherical_aberration),
            amplitude_contrast=full(amplitude_contrast),
            phase_shift=full(phase_shift),
        )


def wavelength(voltage_kv) -> np.ndarray:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    volts = np.asarray(voltage_kv, dtype=np.float64) * 1e3
    return 12.2642598 / np.sqrt(volts * (1.0 + 0.978466e-6 * volts))


def frequency_grid(box: int, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (kx, ky) in 1/Å on the rfft2 grid of a box x box image."""
    ky = np.fft.fftfreq(box, d=pixel_size)[:, None]
    kx = np.fft.rfftfreq(box, d=pixel_size)[None, :]
    return np.broadcast_to(kx, (box, box // 2 + 1)), np.broadcast_to(ky, (box, box // 2 + 1))


def ctf_values(ctf: CtfParams, box: int, pixel_size: float) -> np.ndarray:
    """The CTF of every particle on the rfft2 grid: float32 (N, box, box//2+1)."""
    kx, ky = frequency_grid(box, pixel_size)
    k2 = kx**2 + ky**2
    azimuth = np.arctan2(ky, kx)

    def col(values) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)[:, None, None]

    lam = wavelength(col(ctf.voltage))
    cs = col(ctf.spherical_aberration) * 1e7  # mm -> Å
    mean = (col(ctf.defocus_u) + col(ctf.defocus_v)) / 2
    half_diff = (col(ctf.defocus_u) - col(ctf.defocus_v)) / 2
    dz = mean + half_diff * np.cos(2 * (azimuth - np.deg2rad(col(ctf.defocus_angle))))
    q = np.clip(col(ctf.amplitude_contrast), 0.0, 0.999)
    gamma = np.pi * lam * dz * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    gamma = gamma + np.arcsin(q) + np.deg2rad(col(ctf.phase_shift))
    return np.sin(gamma).astype(np.float32)


def apply_ctf(images: np.ndarray, ctf: CtfParams, pixel_size: float) -> np.ndarray:
    """Multiply each image's Fourier transform by its CTF (what the microscope does)."""
    return _filter(images, ctf, pixel_size, lambda c: c)


def phase_flip(images: np.ndarray, ctf: CtfParams, pixel_size: float) -> np.ndarray:
    """Multiply each image's Fourier transform by the sign of its CTF (float32 out)."""
    return _filter(images, ctf, pixel_size, lambda c: np.where(c < 0, -1.0, 1.0).astype(np.float32))


def _filter(images, ctf: CtfParams, pixel_size: float, transfer) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    n, box = images.shape[0], images.shape[-1]
    if len(ctf) != n:
        raise ValueError(f"CTF parameters for {len(ctf)} particles, but {n} images")
    out = np.empty_like(images)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        part = ctf.subset(np.arange(start, stop))
        spectrum = np.fft.rfft2(images[start:stop])
        spectrum *= transfer(ctf_values(part, box, pixel_size))
        out[start:stop] = np.fft.irfft2(spectrum, s=(box, box))
    return out


def wiener_average(images: np.ndarray, ctf: CtfParams, pixel_size: float, snr: float = 1.0) -> np.ndarray:
    """CTF-corrected average: sum(CTF_i F_i) / (sum(CTF_i^2) + 1/snr), back in real space.

    The images must already be aligned (same orientation and centre); `snr` is the spectral
    signal-to-noise ratio that sets how strongly the zeros of the CTF are regularised.
    """
    images = np.asarray(images, dtype=np.float32)
    n, box = images.shape[0], images.shape[-1]
    if n == 0:
        return np.zeros((box, box), dtype=np.float32)
    numerator = np.zeros((box, box // 2 + 1), dtype=np.complex128)
    denominator = np.zeros((box, box // 2 + 1), dtype=np.float64)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        c = ctf_values(ctf.subset(np.arange(start, stop)), box, pixel_size)
        numerator += (np.fft.rfft2(images[start:stop]) * c).sum(axis=0)
        denominator += (c.astype(np.float64) ** 2).sum(axis=0)
    spectrum = numerator / (denominator + 1.0 / max(snr, 1e-6))
    return np.fft.irfft2(spectrum, s=(box, box)).astype(np.float32)
