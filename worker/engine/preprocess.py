"""Per-particle normalisation and Fourier cropping into one tensor (float32, or float16 to halve it).

The stack is read chunk by chunk, so memory stays flat: only the (N, 1, S, S) result and one
chunk of raw images are ever held. The result lives on the training device, so training never
touches the disk or loops over images in Python. Each chunk is computed in float32 and stored
in the storage precision; whoever reads a float16 stack converts each batch back to float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from worker.engine.io.particles import ParticleStack

# Raw float32 images read at a time. Preprocessing holds about 3.3x this beside its result
# (the raw chunk, its spectrum, the cropped copy), so 64 MiB keeps it near 200 MiB.
CHUNK_BYTES = 64 * 2**20
STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}  # config.STORAGES


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit standard deviation per image (constant images stay zero)."""
    flat = images.flatten(-2)
    mean = flat.mean(-1, keepdim=True)
    std = flat.std(-1, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((flat - mean) / std).view_as(images)


def fourier_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Downsample (..., B, B) images to (..., size, size) by keeping the central spectrum."""
    box = images.shape[-1]
    if size >= box:
        return images
    spectrum = torch.fft.rfft2(images)
    half = size // 2
    kept_rows = torch.cat([spectrum[..., :half, : half + 1], spectrum[..., box - half :, : half + 1]], dim=-2)
    # irfft2 normalises by the output size; rescale so that mean intensities are preserved.
    return torch.fft.irfft2(kept_rows, s=(size, size)) * (size * size) / (box * box)


def model_size(box: int, size: int) -> int:
    """The network's input size: `size`, or the (even) box when the particles are smaller."""
    return min(size, box - box % 2)


ChunkHook = Callable[[torch.Tensor, slice], torch.Tensor]


def preprocess(
    stack: ParticleStack,
    size: int,
    device: torch.device | str = "cpu",
    *,
    before_normalise: ChunkHook | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Read, normalise and Fourier-crop the whole stack into a (N, 1, S, S) tensor of `dtype`
    (the storage precision: STORAGE_DTYPES[config.storage]).

    `before_normalise(chunk, rows)` may change each raw chunk first, a float32 tensor on the
    device (CTF phase flipping: ctf_device.PhaseFlipper).
    """
    n, box = len(stack), stack.box
    target = model_size(box, size)
    out = torch.empty((n, 1, target, target), dtype=dtype, device=device)
    chunk = max(1, chunk_bytes // (4 * box * box))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        raw = stack.read(start, stop)
        images = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)).to(device)
        if before_normalise is not None:
            images = before_normalise(images, slice(start, stop))
        out[start:stop, 0] = fourier_crop(normalise(images), target)
        if on_progress is not None:
            on_progress(stop, n)
    return out
