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
    size. The shifts come back at the search size (fractions of its pixels). Class by class:
    one class's turned average is held at a time, whatever K."""
    size, device = images.shape[-1], images.device
    inverse = 1.0 / on_grid(sigma2, size)
    inverse[0, 0] = 0.0
    mask = search_mask(size, round(SHIFT_RADIUS * scale), device)
    angles, shifts = best.angles[:, 0].clone(), best.shifts[:, 0].clone()
    classes = best.classes[:, 0]
    for c in torch.unique(classes).tolist():
        turned = _turned(references[c] * mask)
        members = torch.nonzero(classes == c).flatten()
        for start in range(0, len(members), BATCH):
            rows = members[start : start + BATCH]
            x, ctf = images[rows].float(), ctfs.take(rows.cpu().numpy())[0 : len(rows)]
            angles[rows], moved = _best_nearby(
                x, ctf * inverse, ctf**2 * inverse, angles[rows], shifts[rows] * scale, turned
            )
            shifts[rows] = moved / scale
    return best.best_only(angles, shifts)


def _turned(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (S, S) reference turned by every angle of the fine grid, flattened (A, S*S), and each
    turn's power spectrum with full-spectrum weights (A, S*(S//2+1)) for the norm term.
    Bilinear turns (not likelihood.rotate_sharp's, eight times dearer at this size): a faint
    blur of the templates moves no score's maximum, and the norm term is their own."""
    count, size = round(360.0 / (FINE_STEP / SUBSTEPS)), reference.shape[-1]
    fine = torch.arange(count, device=reference.device) * (FINE_STEP / SUBSTEPS)
    bank = transform(
        reference.expand(count, size, size), -fine, torch.zeros(count, 2, device=reference.device)
    )
    power = torch.fft.rfft2(bank).abs() ** 2 * fourier_weights(size, reference.device)
    return bank.reshape(count, -1), power.reshape(count, -1)


def _best_nearby(
    x: torch.Tensor,
    filter_: torch.Tensor,
    norm_filter: torch.Tensor,
    angles: torch.Tensor,
    centre: torch.Tensor,
    turned: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles (B,) and shifts (B, 2) in px of this box of the most probable poses near `angles`
    and `centre` for the (B, S, S) particles of one class: its turned average `turned`, each
    particle's c / sigma2 and c^2 / sigma2 on the rfft2 grid."""
    size, device = x.shape[-1], x.device
    bank, power = turned
    step = FINE_STEP / SUBSTEPS
    # y(p + t) for the particle's own shift t: a phase ramp, exact for fractional shifts
    fy = torch.fft.fftfreq(size, device=device)[:, None]
    fx = torch.fft.rfftfreq(size, device=device)[None, :]
    ramp = torch.exp(2j * torch.pi * (fx * centre[:, 0, None, None] + fy * centre[:, 1, None, None]))
    moved = torch.fft.irfft2(torch.fft.rfft2(x) * filter_ * ramp, s=(size, size))
    offsets = torch.arange(-ANGLE_REACH, ANGLE_REACH + 1, device=device)
    index = (torch.round(angles / step).long()[:, None] + offsets) % len(bank)  # (B, A')
    templates = bank[index]  # (B, A', S*S)
    norm = torch.einsum("bf,baf->ba", norm_filter.reshape(len(x), -1), power[index]) / size**2
    reach = torch.arange(-SHIFT_REACH, SHIFT_REACH + 1, device=device)
    width = len(reach)
    scores = (
        torch.stack(
            [
                torch.einsum(
                    "bp,bap->ba",
                    torch.roll(moved, shifts=(-dy, -dx), dims=(-2, -1)).reshape(len(x), -1),
                    templates,
                )
                for dy in reach.tolist()
                for dx in reach.tolist()
            ],
            -1,
        )
        - 0.5 * norm[..., None]
    )  # (B, A', W*W), shift index (dy + r) * W + (dx + r)
    pick = scores.reshape(len(x), -1).argmax(1)
    ia, shift = pick // (width * width), pick % (width * width)
    dy, dx = reach[shift // width], reach[shift % width]
    return index.gather(1, ia[:, None])[:, 0].float() * step, centre + torch.stack([dx, dy], -1).float()
