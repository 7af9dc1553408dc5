"""How good is a class average? Resolution from the Fourier ring correlation (FRC) of two
half-set averages, and, for simulated data, how well an average matches its true view.

The half sets are the even and odd members of each class (in particle order). The quality
figure is the resolution in Å where their FRC first falls below 0.5: smaller is better. A class
whose halves disagree already at the lowest frequency gets None (no meaningful figure).
"""

from __future__ import annotations

import numpy as np
import torch

FRC_THRESHOLD = 0.5
BATCH = 4096  # images summed at a time into the half-set averages


def ring_index(size: int) -> np.ndarray:
    """Ring number (rounded radius in Fourier pixels) of every rfft2 coefficient."""
    ky = np.fft.fftfreq(size) * size
    kx = np.fft.rfftfreq(size) * size
    return np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)).astype(np.int64)


def frc(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """FRC of image pairs (..., S, S) for rings 0..S/2-1 -> (..., S/2)."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    size = first.shape[-1]
    rings = ring_index(size)
    keep = rings < size // 2
    a = np.fft.rfft2(first)[..., keep]
    b = np.fft.rfft2(second)[..., keep]
    index = rings[keep]
    lead = a.shape[:-1]

    def ring_sum(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(-1, values.shape[-1])
        out = np.zeros((flat.shape[0], size // 2))
        for row, v in enumerate(flat):
            out[row] = np.bincount(index, weights=v, minlength=size // 2)
        return out.reshape(*lead, size // 2)

    cross = ring_sum((a * np.conj(b)).real)
    power = ring_sum(np.abs(a) ** 2) * ring_sum(np.abs(b) ** 2)
    return np.where(power > 0, cross / np.sqrt(np.where(power > 0, power, 1.0)), 0.0)


def resolution(curve: np.ndarray, pixel_size: float, threshold: float = FRC_THRESHOLD) -> float | None:
    """Resolution in Å where an FRC curve (rings 0..S/2-1) first drops below `threshold`."""
    size = 2 * len(curve)
    below = np.flatnonzero(curve[1:] < threshold)
    if len(below) == 0:
        return 2.0 * pixel_size  # correlated up to Nyquist
    ring = int(below[0]) + 1
    if ring == 1:
        return None
    # Linear interpolation between the last ring above and the first below.
    high, low = curve[ring - 1], curve[ring]
    crossing = ring - 1 + (high - threshold) / max(high - low, 1e-12)
    return float(size * pixel_size / crossing)


def half_set_averages(images: torch.Tensor | np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, 2, S, S) averages of each class's even and odd members."""
    images = torch.as_tensor(images)
    flat = images.reshape(len(images), -1)
    labels = np.asarray(labels)
    parity = np.zeros(len(labels), dtype=np.int64)
    for c in range(k):  # position within the class, not within the stack
        members = np.flatnonzero(labels == c)
        parity[members] = np.arange(len(members)) % 2
    group = torch.as_tensor(labels * 2 + parity, device=flat.device)
    sums = torch.zeros((2 * k, flat.shape[1]), dtype=torch.float64, device=flat.device)
    for start in range(0, len(flat), BATCH):  # float64 copies of a batch, never of the stack
        rows = slice(start, start + BATCH)
        sums.index_add_(0, group[rows], flat[rows].to(torch.float64))
    counts = torch.bincount(group, minlength=2 * k).clamp(min=1).to(torch.float64)
    size = images.shape[-1]
    return (sums / counts[:, None]).reshape(k, 2, size, size).float().cpu().numpy()


def class_resolutions(
    images: torch.Tensor | np.ndarray,
    labels: np.ndarray,
    k: int,
    pixel_size: float,
    halves: np.ndarray | None = None,
) -> list[float | None]:
    """Per-class FRC-0.5 resolution in Å (None for classes with < 2 members or no signal).

    `halves` (k, 2, S, S), e.g. AlignedAverager.half_averages, replaces the plain half-set
    means when the averages were aligned.
    """
    counts = np.bincount(np.asarray(labels), minlength=k)
    if halves is None:
        halves = half_set_averages(images, labels, k)
    curves = frc(halves[:, 0], halves[:, 1])
    return [resolution(curves[c], pixel_size) if counts[c] >= 2 else None for c in range(k)]


def sort_order(classes: list[dict]) -> list[int]:
    """Class indices best first: finest resolution, then largest; classes without one last."""

    def key(i: int):
        quality = classes[i].get("quality")
        return (quality is None, quality if quality is not None else 0.0, -classes[i]["count"])

    return sorted(range(len(classes)), key=key)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def view_match(average: np.ndarray, view: np.ndarray) -> dict[str, float]:
    """How well an average matches a true view after the best in-plane rotation and shift.

    `correlation` compares whole images; `anisotropic` compares what is left after removing
    each image's rotational average, the view-specific part a rotationally smeared mean lacks.
    """
    from worker.engine.align import align_to_reference, apply_alignment, rotational_average

    image = torch.as_tensor(np.asarray(average, dtype=np.float32))[None]
    truth = torch.as_tensor(np.asarray(view, dtype=np.float32))
    pose = align_to_reference(image, truth)
    aligned = apply_alignment(image, pose)[0]
    return {
        "correlation": _correlation(aligned.numpy(), truth.numpy()),
        "anisotropic": _correlation(
            (aligned - rotational_average(aligned)).numpy(), (truth - rotational_average(truth)).numpy()
        ),
    }
