"""Reference-free alignment of each class's members (in-plane rotation + shift) and the
aligned class averages.

For each class: the reference starts as the plain class mean; each iteration finds, for every
member at once, the in-plane angle and shift that best match the reference (a coarse grid of
rotated references, with all shifts of each from one FFT cross-correlation, on a Fourier-cropped
copy; then a local angle refinement at full size with a sub-pixel peak), averages the aligned
members into the next reference and re-centres it. Everything is batched over particles in
torch; the only Python loops run over angles, iterations and classes.

Conventions match worker.engine.simulate: a particle with angle a and shift t is
view(R(-a) (p - t)); aligning it samples it at R(a) p + t, which gives back the view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from worker.engine.preprocess import fourier_crop

COARSE_SIZE = 32  # the grid search runs on images Fourier-cropped to this size
BATCH = 2048  # particles per search batch (bounds memory)
INTERPOLATION = "bilinear"
FINE_LOW_PASS = 0.12  # cycles/px: Gaussian low-pass for the fine search
SHARP_WORKSPACE = 16  # an image's size times this: what moving it on the twice finer grid holds


@dataclass(frozen=True)
class AlignParams:
    """How to align each particle: sample it at R(angle) p + shift (angle in degrees, shift px)."""

    angles: np.ndarray  # (N,)
    shifts: np.ndarray  # (N, 2) x, y in pixels
    scores: np.ndarray  # (N,) cross-correlation with the reference


def transform(images: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """out(p) = image(R(angle) p + shift) for (B, S, S) images; bilinear, zero outside.

    p is measured from pixel S//2. One affine grid per image: in grid_sample's normalised
    coordinates (align_corners=False) p = S/2 u + d with d = (S-1)/2 - S//2, hence
    source = R u + 2/S (shift + d (R 1 - 1)).
    """
    b, size = images.shape[0], images.shape[-1]
    theta = torch.deg2rad(angles.to(device=images.device, dtype=torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    d = (size - 1) / 2 - size // 2
    offset = shifts.to(device=images.device, dtype=torch.float32) + d * (rotation.sum(-1) - 1)
    matrix = torch.cat([rotation, (2.0 / size) * offset[..., None]], -1)  # (B, 2, 3)
    # affine_grid's own arithmetic as one batched product (its CPU kernel is several times slower)
    grid = (_base_grid(size, images.device) @ matrix.transpose(1, 2)).reshape(b, size, size, 2)
    out = F.grid_sample(
        images.reshape(b, 1, size, size).float(),
        grid,
        mode=INTERPOLATION,
        padding_mode="zeros",
        align_corners=False,
    )
    return out[:, 0]


def _base_grid(size: int, device) -> torch.Tensor:
    """(S*S, 3) rows (u, v, 1): pixel centres in grid_sample's coordinates (align_corners=False)."""
    u = (2 * torch.arange(size, dtype=torch.float32, device=device) + 1) / size - 1
    v, x = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([x.reshape(-1), v.reshape(-1), torch.ones(size * size, device=device)], -1)


def soft_mask(size: int, radius: float, device=None) -> torch.Tensor:
    """A circular mask with a cosine edge 3 px wide, centred on pixel size//2."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    r = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    edge = ((r - radius) / 3.0).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * edge))


def low_pass(images: torch.Tensor, sigma: float = FINE_LOW_PASS) -> torch.Tensor:
    """Gaussian low-pass, sigma in cycles per pixel, for (..., S, S) images."""
    size = images.shape[-1]
    fy = torch.fft.fftfreq(size, device=images.device)[:, None]
    fx = torch.fft.rfftfreq(size, device=images.device)[None, :]
    gain = torch.exp(-(fx**2 + fy**2) / (2 * sigma**2))
    return torch.fft.irfft2(torch.fft.rfft2(images) * gain, s=(size, size))


def template_bank(reference: torch.Tensor, angles: torch.Tensor, radius: int) -> torch.Tensor:
    """The reference rotated by each angle and shifted by each integer (x, y) in [-radius,
    radius]^2, masked and scaled to unit norm: (A, W, W, S*S) with W = 2 radius + 1.

    A template for angle a and shift t is reference(R(-a) (p - t)), what a particle of that
    angle and shift looks like. Integer shifts are exact rolls of the rotated reference (the
    mask keeps the rolled-in edge empty)."""
    size = reference.shape[-1]
    device = reference.device
    masked = reference * soft_mask(size, 0.45 * size - radius, device)
    angles = angles.to(device).float()
    rotated = transform(
        masked.expand(len(angles), size, size), -angles, torch.zeros(len(angles), 2, device=device)
    )
    w = 2 * radius + 1
    # One gather for all rolls: template[t][y, x] = rotated[(y - ty) % S, (x - tx) % S].
    steps = torch.arange(-radius, radius + 1, device=device)
    pixels = torch.arange(size, device=device)
    rows = (pixels[None, :] - steps[:, None]) % size  # (W, S)
    source = rows[:, None, :, None] * size + rows[None, :, None, :]  # (W, W, S, S)
    bank = rotated.reshape(len(angles), -1)[:, source.reshape(-1)]
    bank = bank.reshape(len(angles), w, w, size * size)
    return bank / bank.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _parabola(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor):
    """Vertex offset (within +-0.5) and height of the parabola through three equally spaced
    points; (0, centre) where the points do not bend down."""
    curvature = minus - 2 * centre + plus
    bends = curvature < 0
    safe = torch.where(bends, curvature, -torch.ones_like(curvature))
    offset = torch.where(bends, 0.5 * (minus - plus) / safe, torch.zeros_like(curvature))
    height = torch.where(bends, centre - (minus - plus) ** 2 / (8 * safe), centre)
    return offset.clamp(-0.5, 0.5), torch.maximum(height, centre)


def _neighbours(values: torch.Tensor, index: torch.Tensor, dim: int):
    """values at index-1 and index+1 along dim (clamped), and whether both exist."""
    limit = values.shape[dim]
    minus = values.gather(dim, (index - 1).clamp(0, limit - 1))
    plus = values.gather(dim, (index + 1).clamp(0, limit - 1))
    return minus, plus, (index > 0) & (index < limit - 1)


def best_template(images: torch.Tensor, bank: torch.Tensor):
    """Scores of every image against every template with one matrix product, then the best
    (fractional angle index, y index, x index) and its score.

    The peak over shifts is interpolated (a parabola along x and along y) for every angle
    before the angles are compared: with sharp features, a wrong angle at a lucky integer
    shift can otherwise beat the right angle at a rounded shift.
    """
    b, n_angles, w = len(images), bank.shape[0], bank.shape[1]
    scores = images.reshape(b, -1) @ bank.reshape(-1, bank.shape[-1]).T
    scores = scores.reshape(b, n_angles, w * w)
    peak, flat = scores.max(-1)  # (B, A)
    iy, ix = flat // w, flat % w
    grid = scores.reshape(b, n_angles, w, w)

    def along(axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Move the wanted axis last, pick the peak's row, and fit around the peak.
        other, own = (ix, iy) if axis == 2 else (iy, ix)
        lines = grid.transpose(2, 3) if axis == 2 else grid  # (B, A, other, own)
        line = lines.gather(2, other[..., None, None].expand(b, n_angles, 1, w))[:, :, 0]
        minus, plus, inside = _neighbours(line, own[..., None], 2)
        offset, height = _parabola(minus[..., 0], peak, plus[..., 0])
        return offset * inside[..., 0], torch.where(inside[..., 0], height, peak)

    dx, height_x = along(3)
    dy, height_y = along(2)
    height = height_x + height_y - peak  # both corrections add to the peak
    best, ia = height.max(-1)  # (B,)
    minus, plus, inside = _neighbours(height, ia[:, None], 1)
    da, _ = _parabola(minus[:, 0], best, plus[:, 0])
    rows = torch.arange(b, device=images.device)
    fy = iy[rows, ia].float() + dy[rows, ia]
    fx = ix[rows, ia].float() + dx[rows, ia]
    return ia.float() + da * inside[:, 0], fy, fx, best


def align_to_reference(
    images: torch.Tensor,
    reference: torch.Tensor,
    max_shift: float | None = None,
    angle_step: float = 6.0,
    small: torch.Tensor | None = None,
) -> AlignParams:
    """Angle and shift that bring each (N, S, S) image onto `reference` (S, S).

    Coarse: every `angle_step` degrees and every coarse pixel of shift up to max_shift, on
    copies Fourier-cropped to COARSE_SIZE (pass them as `small` to reuse them). Fine: each
    particle is brought to its coarse pose, then matched at full size to the reference turned
    by -step..+step in 1 degree steps and moved by -2..2 px, with a sub-pixel fit.
    """
    images = images.reshape(-1, images.shape[-2], images.shape[-1]).float()
    size = images.shape[-1]
    device = images.device
    reference = reference.reshape(size, size).float().to(device)
    max_shift = size / 10 if max_shift is None else max_shift
    coarse = min(size, COARSE_SIZE)
    scale = size / coarse
    if small is None:
        small = fourier_crop(images, coarse)
    coarse_angles = torch.arange(0.0, 360.0, angle_step, device=device)
    coarse_radius = max(1, round(max_shift / scale))
    coarse_bank = template_bank(fourier_crop(reference[None], coarse)[0], coarse_angles, coarse_radius)
    fine_radius = 2
    # +-one coarse step: a coarse shift off by a pixel can make a neighbouring angle win.
    reach = math.ceil(angle_step)
    fine_offsets = torch.arange(-reach, reach + 1.0, device=device)
    # Both sides low-passed: interpolating 1-2 px features biases a full-band comparison.
    fine_bank = template_bank(low_pass(reference), fine_offsets, fine_radius)
    angles, shifts, scores = [], [], []
    for start in range(0, len(images), BATCH):
        ia, iy, ix, _ = best_template(small[start : start + BATCH], coarse_bank)
        angle = ia.round() * angle_step
        shift = torch.stack([ix.round() - coarse_radius, iy.round() - coarse_radius], -1) * scale
        posed = low_pass(transform(images[start : start + BATCH], angle, shift))
        fa, fy, fx, score = best_template(posed, fine_bank)
        # posed = reference(R(-d) (p - s)), so the particle needs angle + d, shift + R(angle) s.
        s = torch.stack([fx - fine_radius, fy - fine_radius], -1)
        cos, sin = torch.cos(torch.deg2rad(angle)), torch.sin(torch.deg2rad(angle))
        shift = shift + torch.stack([cos * s[:, 0] - sin * s[:, 1], sin * s[:, 0] + cos * s[:, 1]], -1)
        angle = angle + fine_offsets[0] + fa
        angles.append(angle % 360.0)
        shifts.append(shift)
        scores.append(score)
    return AlignParams(
        torch.cat(angles).cpu().numpy(), torch.cat(shifts).cpu().numpy(), torch.cat(scores).cpu().numpy()
    )


def apply_alignment(images: torch.Tensor, params: AlignParams) -> torch.Tensor:
    """The images brought onto their reference (N, S, S)."""
    images = images.reshape(-1, images.shape[-2], images.shape[-1])
    device = images.device
    out = torch.empty(images.shape, dtype=torch.float32, device=device)
    for start in range(0, len(images), BATCH):
        stop = start + BATCH
        out[start:stop] = transform(
            images[start:stop],
            torch.as_tensor(params.angles[start:stop], device=device),
            torch.as_tensor(params.shifts[start:stop], device=device),
        )
    return out


def rotational_average(image: torch.Tensor) -> torch.Tensor:
    """The (S, S) image's mean over rings around pixel S//2 (radius in 0.5 px bins)."""
    size = image.shape[-1]
    coords = torch.arange(size, dtype=torch.float32, device=image.device) - size // 2
    radius = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    ring = torch.round(2 * radius).long().reshape(-1)
    values = image.reshape(-1).float()
    sums = torch.zeros(int(ring.max()) + 1, device=image.device).index_add_(0, ring, values)
    counts = torch.bincount(ring).float()
    return (sums / counts)[ring].reshape(size, size)


def centring_shift(reference: torch.Tensor, max_shift: float) -> torch.Tensor:
    """The (x, y) shift, in `transform`'s convention, that moves the reference to where it best
    matches its own rotational average (sign-independent): (2,), sub-pixel, at most max_shift
    rounded up (and half a pixel)."""
    size = reference.shape[-1]
    target = rotational_average(reference) * soft_mask(size, 0.45 * size, reference.device)
    radius = max(1, math.ceil(max_shift))
    bank = template_bank(target, torch.zeros(1, device=reference.device), radius)
    _, iy, ix, _ = best_template(reference[None], bank)
    return torch.stack([ix - radius, iy - radius], -1)[0]  # reference = target moved by shift


def centre(reference: torch.Tensor, max_shift: float) -> torch.Tensor:
    """Shift the reference so it best matches its own rotational average (sign-independent)."""
    shift = centring_shift(reference, max_shift)
    return transform(reference[None], torch.zeros(1, device=reference.device), shift[None])[0]


def align_class(
    images: torch.Tensor,
    iterations: int = 4,
    max_shift: float | None = None,
    angle_step: float = 6.0,
) -> tuple[torch.Tensor, AlignParams]:
    """Iterative reference-free alignment of one class; returns (average, params)."""
    images = images.reshape(-1, images.shape[-2], images.shape[-1]).float()
    size = images.shape[-1]
    max_shift = size / 10 if max_shift is None else max_shift
    reference = centre(images.mean(0), max_shift)
    params = AlignParams(np.zeros(len(images)), np.zeros((len(images), 2)), np.zeros(len(images)))
    small = fourier_crop(images, min(size, COARSE_SIZE))
    for _ in range(iterations):
        params = align_to_reference(images, reference, max_shift, angle_step, small)
        reference = centre(apply_alignment(images, params).mean(0), max_shift)
    return apply_alignment(images, params).mean(0), params


class AlignedAverager:
    """Class averages after reference-free in-plane alignment of each class's members.

    After `average`, `params` holds every particle's alignment and `half_averages` the
    (k, 2, S, S) averages of the even and odd members, each half aligned on its own (a
    gold-standard FRC: halves aligned to one reference share its noise and agree too well).
    """

    name = "aligned"

    def __init__(self, iterations: int = 4, max_shift: float | None = None, angle_step: float = 6.0):
        self.iterations = iterations
        self.max_shift = max_shift
        self.angle_step = angle_step
        self.params: AlignParams | None = None
        self.half_averages: np.ndarray | None = None
        self.size: int | None = None  # the image size `params` were found at

    def average(self, images: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
        images = images.reshape(-1, images.shape[-2], images.shape[-1])
        size = images.shape[-1]
        labels = np.asarray(labels)
        averages = np.zeros((k, size, size), dtype=np.float32)
        halves = np.zeros((k, 2, size, size), dtype=np.float32)
        angles = np.zeros(len(images))
        shifts = np.zeros((len(images), 2))
        scores = np.zeros(len(images))
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members) == 0:
                continue
            index = torch.as_tensor(members, device=images.device)
            subset = images[index]
            average, params = align_class(subset, self.iterations, self.max_shift, self.angle_step)
            averages[c] = average.cpu().numpy()
            # Gold standard: each half aligned against its own reference, never the shared one.
            for h in range(min(2, len(members))):
                half, _ = align_class(subset[h::2], self.iterations, self.max_shift, self.angle_step)
                halves[c, h] = half.cpu().numpy()
            angles[members], shifts[members], scores[members] = params.angles, params.shifts, params.scores
        self.params = AlignParams(angles, shifts, scores)
        self.half_averages = halves
        self.size = size
        return averages

    def average_at(self, images: torch.Tensor, labels: np.ndarray, k: int, pixel_size: float) -> np.ndarray:
        """The last `average`'s alignments applied to the same particles at another box
        (N, 1, B, B): angles as found, shifts scaled by B / the size they were found at; moved on
        a twice finer grid (likelihood.transform_sharp), so interpolation keeps the detail a
        full-size average is for."""
        from worker.engine.averages import batched_class_means
        from worker.engine.likelihood import transform_sharp

        if self.params is None or len(self.params.angles) != len(images):
            raise ValueError("average_at needs the alignments of an `average` of the same particles")
        scale = images.shape[-1] / self.size
        angles = torch.as_tensor(self.params.angles, dtype=torch.float32, device=images.device)
        shifts = torch.as_tensor(self.params.shifts, dtype=torch.float32, device=images.device) * scale

        def move(batch: torch.Tensor, rows: slice) -> torch.Tensor:
            return transform_sharp(batch, angles[rows], shifts[rows])

        return batched_class_means(images, labels, k, move, factor=SHARP_WORKSPACE)
