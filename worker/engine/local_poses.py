"""Local refinement of each particle's best pose before the final averages.

The pose search scores angles on a FINE_STEP grid (7.5 degrees) and whole-pixel shifts at the
search size (32 px, so 2 px apart at 64 px). A particle's best pose is then up to half a step
off in angle and a pixel off in shift, which blurs the averages at the radius of the molecule
(3.75 degrees is 1.3 px at 20 px from the centre). Here each particle is scored once more against
its own class's full-size average, at angles a sub-step apart around its best angle and at
whole-pixel shifts of the full box around its best shift, under the same noise model and CTF as
the E-step (worker.engine.likelihood), and moves to the most probable of those poses.

    refined = refine_best(images, ctfs, best, averages, sigma2_full, scale)

Only the best pose of each particle is refined (the averages use that one); its class stays.
"""

from __future__ import annotations

import torch

from worker.engine.align import transform
from worker.engine.likelihood import (
    BATCH,
    Posterior,
    fourier_weights,
    on_grid,
    search_mask,
)
from worker.engine.poses import FINE_STEP, SHIFT_RADIUS

SUBSTEPS = 6  # the fine grid divides FINE_STEP by this (1.25 degrees)
ANGLE_REACH = 3  # ... and reaches this many sub-steps either side of the best angle
SHIFT_REACH = 1  # px of the full box either side of the best shift


@torch.no_grad()
def refine_best(
    images: torch.Tensor,
    ctfs,
    best: Posterior,
    references: torch.Tensor,
    sigma2: torch.Tensor,
    scale: float,
) -> Posterior:
    """`best` (one pose per particle, shifts at the search size) with each angle and shift moved
    to the most probable nearby one against `references` (K, S, S) at the size of `images`
    (N, S, S); `sigma2` is the noise per ring at that size, `scale` its size over the search
    size. The shifts come back at the search size (fractions of its pixels)."""
    n, size = images.shape[0], images.shape[-1]
    device = images.device
    k = len(references)
    step = FINE_STEP / SUBSTEPS
    count = round(360.0 / step)
    fine = torch.arange(count, device=device) * step
    masked = references * search_mask(size, round(SHIFT_RADIUS * scale), device)
    # Bilinear turns (not likelihood.rotate_sharp's, eight times dearer at this size): a faint
    # blur of the templates moves no score's maximum; the norm term below is their own.
    bank = transform(
        masked.repeat_interleave(count, 0), -fine.repeat(k), torch.zeros(k * count, 2, device=device)
    )
    power = torch.fft.rfft2(bank).abs() ** 2 * fourier_weights(size, device)
    bank, power = bank.reshape(k, count, -1), power.reshape(k, count, -1)
    inverse = 1.0 / on_grid(sigma2, size)
    inverse[0, 0] = 0.0
    offsets = torch.arange(-ANGLE_REACH, ANGLE_REACH + 1, device=device)
    reach = torch.arange(-SHIFT_REACH, SHIFT_REACH + 1, device=device)
    frequencies_y = torch.fft.fftfreq(size, device=device)[:, None]
    frequencies_x = torch.fft.rfftfreq(size, device=device)[None, :]
    angles, shifts = best.angles[:, 0].clone(), best.shifts[:, 0].clone()
    for start in range(0, n, BATCH):
        rows = slice(start, min(n, start + BATCH))
        x, c = images[rows].float(), ctfs[rows]
        centre = shifts[rows] * scale  # (B, 2) x, y in px of this box
        # y(p + t) for the particle's own shift t: a phase ramp, exact for fractional shifts
        ramp = torch.exp(
            2j
            * torch.pi
            * (frequencies_x * centre[:, 0, None, None] + frequencies_y * centre[:, 1, None, None])
        )
        spectrum = torch.fft.rfft2(x) * c * inverse
        moved = torch.fft.irfft2(spectrum * ramp, s=(size, size))
        index = (torch.round(angles[rows] / step).long()[:, None] + offsets) % count  # (B, A')
        cls = best.classes[rows, 0][:, None].expand_as(index)
        templates = bank[cls, index]  # (B, A', S*S)
        norm = torch.einsum("bf,baf->ba", (c**2 * inverse).reshape(len(x), -1), power[cls, index]) / size**2
        scores = []
        for dy in reach.tolist():
            for dx in reach.tolist():
                rolled = torch.roll(moved, shifts=(-dy, -dx), dims=(-2, -1)).reshape(len(x), -1)
                scores.append(torch.einsum("bp,bap->ba", rolled, templates) - 0.5 * norm)
        scores = torch.stack(scores, -1)  # (B, A', W*W), shift index (dy + r) * W + (dx + r)
        pick = scores.reshape(len(x), -1).argmax(1)
        width = len(reach)
        ia, shift = pick // (width * width), pick % (width * width)
        dy, dx = reach[shift // width], reach[shift % width]
        angles[rows] = index.gather(1, ia[:, None])[:, 0].float() * step
        shifts[rows] = (centre + torch.stack([dx, dy], -1).float()) / scale
    return Posterior(
        best.classes[:, :1],
        angles[:, None],
        shifts[:, None],
        torch.ones_like(angles)[:, None],
        best.class_probs,
        best.log_likelihood,
    )
