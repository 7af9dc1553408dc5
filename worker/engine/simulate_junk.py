"""Boxes without a proper particle, as real stacks have them, and coloured noise.

Junk kinds (each drawn with equal probability):
- "ice": empty ice, noise only;
- "carbon": a carbon edge, a soft step across the box whose density grows away from the edge;
- "contamination": a large, dense blob (an ice crystal or ethane droplet);
- "aggregate": 2 to 4 particle copies in random views and rotations, overlapping;
- "cut": one particle shifted 0.35 to 0.5 box off centre, so the box edge cuts it.

Junk gets the same CTF and noise as the particles afterwards. Densities are scaled by the
particles' mean peak density (`peak`): a carbon step of 0.3-0.6 peak over half the box, a
contamination blob 1.5-3 times as dense as the particles' peak, so junk stands out as it does in
real stacks.

Pink noise has a 1/f power spectrum (amplitude 1/sqrt(f), f in cycles per pixel, floored at
1/box), scaled so that its variance over the box equals that of the white noise it replaces.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

JUNK_KINDS = ("ice", "carbon", "contamination", "aggregate", "cut")
NOISES = ("white", "pink")

# draw(frames (N,2,3), angles (N,), shifts (N,2)) -> particle images (N, box, box)
Draw = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _pixel_grid(box: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(box, dtype=np.float64) - box // 2
    return coords[None, :], coords[:, None]  # x (columns), y (rows)


def carbon_edge(box: int, peak: float, rng: np.random.Generator) -> np.ndarray:
    x, y = _pixel_grid(box)
    phi = rng.uniform(0, 2 * np.pi)
    across = np.cos(phi) * x + np.sin(phi) * y - rng.uniform(-0.3, 0.3) * box
    width = rng.uniform(1.0, 3.0)
    step = 1.0 / (1.0 + np.exp(-across / width))
    gradient = 1.0 + rng.uniform(0.5, 1.5) * np.clip(across, 0, None) / box
    return (rng.uniform(0.3, 0.6) * peak * step * gradient).astype(np.float32)


def contamination(box: int, peak: float, rng: np.random.Generator) -> np.ndarray:
    x, y = _pixel_grid(box)
    cx, cy = rng.uniform(-0.25, 0.25, 2) * box
    sigma = rng.uniform(0.12, 0.2) * box
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return (rng.uniform(1.5, 3.0) * peak * blob).astype(np.float32)


def aggregate(frames: np.ndarray, draw: Draw, box: int, rng: np.random.Generator) -> np.ndarray:
    copies = int(rng.integers(2, 5))
    chosen = frames[rng.integers(0, len(frames), copies)]
    radius = rng.uniform(0.1, 0.22, copies) * box
    phi = rng.uniform(0, 2 * np.pi, copies)
    shifts = np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=1)
    shifts -= shifts.mean(axis=0)  # the clump, not one copy, sits at the centre
    return draw(chosen, rng.uniform(0, 360, copies), shifts).sum(axis=0)


def cut_particle(frames: np.ndarray, draw: Draw, box: int, rng: np.random.Generator) -> np.ndarray:
    radius = rng.uniform(0.35, 0.5) * box
    phi = rng.uniform(0, 2 * np.pi)
    shift = np.array([[radius * np.cos(phi), radius * np.sin(phi)]])
    return draw(frames[rng.integers(0, len(frames), 1)], rng.uniform(0, 360, 1), shift)[0]


def junk_boxes(
    kinds: np.ndarray, frames: np.ndarray, draw: Draw, box: int, peak: float, rng: np.random.Generator
) -> np.ndarray:
    """Noise-free junk images (len(kinds), box, box) for kind indices into JUNK_KINDS."""
    out = np.zeros((len(kinds), box, box), dtype=np.float32)  # "ice" stays empty
    for i, kind in enumerate(JUNK_KINDS[int(j)] for j in kinds):
        if kind == "carbon":
            out[i] = carbon_edge(box, peak, rng)
        elif kind == "contamination":
            out[i] = contamination(box, peak, rng)
        elif kind == "aggregate":
            out[i] = aggregate(frames, draw, box, rng)
        elif kind == "cut":
            out[i] = cut_particle(frames, draw, box, rng)
    return out


def pink_gain(box: int) -> np.ndarray:
    """rfft2 gain (box, box//2+1) giving a 1/f power spectrum with unit mean power."""
    fy = np.fft.fftfreq(box)[:, None]
    fx = np.fft.fftfreq(box)[None, :]
    f = np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / box)
    gain = 1.0 / np.sqrt(f)
    gain /= np.sqrt(np.mean(gain**2))  # over the full spectrum: variance is kept
    return gain[:, : box // 2 + 1]


def colour(noise: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Filter white noise (N, box, box) in place by an rfft2 gain."""
    box = noise.shape[-1]
    noise[:] = np.fft.irfft2(np.fft.rfft2(noise) * gain, s=(box, box))
    return noise
