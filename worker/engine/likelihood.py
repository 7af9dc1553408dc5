"""Maximum-likelihood 2-D classification with poses: the E- and M-steps of the pose method.

Model (as RELION and cryoSPARC 2-D classification): particle i is its class reference A_k,
turned by an in-plane angle a and moved by a shift t, filtered by the particle's CTF c_i, plus
Gaussian noise whose variance sigma2(f) depends on the frequency ring only:

    log p(x_i | k, a, t) = <x_i, c_i T_t R_a A_k>_{1/sigma2} - 0.5 ||c_i T_t R_a A_k||^2_{1/sigma2}
                           + log pi_k + const.

The CTF filter is self-adjoint, so the cross term is <y_i, T_t R_a A_k> with y_i = x_i filtered
once by c_i / sigma2: every (class, angle, shift) score of a batch is one matrix product against
a bank of rotated, rolled references. The CTF is taken isotropic (mean defocus; astigmatism is a
few per cent of the defocus), so the norm term does not depend on the pose and is one (N x F) @
(F x K) product of the particles' c^2 / sigma2 with the references' power spectra.

The E-step keeps the P most probable poses of each particle with their posterior weights
(a sparse posterior); the M-step averages each class's particles over those poses with their
CTFs (Wiener-like: sum w c X / (sum w c^2 + sigma2 / tau2), tau2 the class's own signal power).

Units: Fourier coefficients are rfft2 values; with the full-FFT weights (2 for the columns the
rfft drops), (1/S^2) sum |X|^2 is the real-space sum of squares, and sigma2 is per pixel.
Conventions of poses are those of worker.engine.align: a particle with angle a and shift t is
A(R(-a) (p - t)); transform(particle, a, t) brings it back onto A.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worker.engine.align import soft_mask, transform
from worker.engine.ctf import CtfParams
from worker.engine.ctf_device import ParticleCtfs
from worker.engine.preprocess import fourier_crop
from worker.engine.quality import ring_index

BATCH = 512  # particles scored at a time: scores are BATCH x K x angles x shifts floats
TOP_POSES = 4  # poses kept per particle for the M-step
MASK_FRACTION = 0.45  # soft mask radius as a fraction of the box (less the shift range)


@dataclass
class Posterior:
    """The P most probable poses of every particle, with their posterior weights."""

    classes: torch.Tensor  # (N, P) int64
    angles: torch.Tensor  # (N, P) degrees
    shifts: torch.Tensor  # (N, P, 2) px (x, y) at the search size
    weights: torch.Tensor  # (N, P), each row sums to 1
    class_probs: torch.Tensor  # (N, K) posterior of each class, summed over its poses
    log_likelihood: torch.Tensor  # (N,) log sum over every pose of p(x, k, a, t)

    @property
    def labels(self) -> np.ndarray:
        return self.class_probs.argmax(1).cpu().numpy()

    def best(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class, angle and shift of each particle's most probable pose."""
        return self.classes[:, 0], self.angles[:, 0], self.shifts[:, 0]

    def best_only(self, angles: torch.Tensor | None = None, shifts: torch.Tensor | None = None) -> Posterior:
        """Each particle's most probable pose alone, with weight 1; `angles` (N,) and `shifts`
        (N, 2), where given, move it (the class stays)."""
        angles = self.angles[:, 0] if angles is None else angles
        shifts = self.shifts[:, 0] if shifts is None else shifts
        return Posterior(
            self.classes[:, :1],
            angles[:, None],
            shifts[:, None],
            torch.ones_like(self.weights[:, :1]),
            self.class_probs,
            self.log_likelihood,
        )


def fourier_weights(size: int, device=None) -> torch.Tensor:
    """Weights of rfft2 coefficients that turn their sums into full-spectrum sums."""
    w = torch.full((size, size // 2 + 1), 2.0, device=device)
    w[:, 0] = 1.0
    if size % 2 == 0:
        w[:, -1] = 1.0
    return w


def rings(size: int, device=None) -> torch.Tensor:
    """Ring number of each rfft2 coefficient, clamped to the last ring (size//2)."""
    return torch.as_tensor(ring_index(size), device=device).clamp(max=size // 2)


def ring_mean(values: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of (..., S, S//2+1) values over each ring (full-spectrum weighting) -> (..., S//2+1)."""
    index = rings(size, values.device).reshape(-1)
    weights = fourier_weights(size, values.device).reshape(-1)
    flat = values.reshape(-1, index.numel()) * weights
    sums = torch.zeros(flat.shape[0], size // 2 + 1, device=values.device, dtype=flat.dtype)
    sums.index_add_(1, index, flat)
    counts = torch.zeros(size // 2 + 1, device=values.device, dtype=flat.dtype).index_add_(
        0, index, weights.to(flat.dtype)
    )
    return (sums / counts.clamp(min=1)).reshape(*values.shape[:-2], size // 2 + 1)


def on_grid(profile: torch.Tensor, size: int) -> torch.Tensor:
    """Spread a ring profile (..., S//2+1) over the rfft2 grid (..., S, S//2+1)."""
    return profile[..., rings(size, profile.device)]


def particle_ctfs(
    ctf: CtfParams | None, n: int, size: int, pixel_size: float, flipped: bool, device=None
) -> ParticleCtfs:
    """The particles' CTFs at `size` (see ParticleCtfs), as the E- and M-steps read them."""
    return ParticleCtfs(ctf, n, size, pixel_size, flipped, device)


def logsumexp_last_(scores: torch.Tensor) -> torch.Tensor:
    """log(sum(exp(scores))) over the last axis, as torch.logsumexp gives it, about four times
    faster on a CPU: terms more than 80 below the maximum (below 2e-35 of the largest, nothing
    to a float32 sum) are raised to that floor first, since exp of far more negative numbers
    takes the CPU's slow path for subnormals. Overwrites `scores` (no copy of a score block)."""
    top = scores.amax(-1, keepdim=True)
    empty = torch.isneginf(top)  # a class a particle may not take: every score is -inf
    top = top.masked_fill(empty, 0.0)
    sums = scores.sub_(top).clamp_(min=-80.0).exp_().sum(-1).log_()
    return (top + sums[..., None]).masked_fill_(empty, float("-inf"))[..., 0]


def noise_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Initial sigma2 per ring: the particles' mean power (at low SNR mostly noise)."""
    size = images.shape[-1]
    power = torch.zeros(size, size // 2 + 1, device=images.device, dtype=torch.float64)
    for start in range(0, len(images), BATCH):
        power += (torch.fft.rfft2(images[start : start + BATCH].float()).abs() ** 2).sum(0)
    return _with_mean_ring((ring_mean(power / len(images), size) / size**2).float())


def _with_mean_ring(sigma2: torch.Tensor) -> torch.Tensor:
    """Ring 0 holds only the mean, which normalisation removed: give it ring 1's value."""
    sigma2 = sigma2.clone()
    sigma2[0] = sigma2[1]
    return sigma2


def rolled_bank(rotated: torch.Tensor, radius: int) -> torch.Tensor:
    """Every integer shift (x, y) in [-radius, radius]^2 of (M, S, S) images, as exact rolls:
    (M, W*W, S*S), W = 2 radius + 1, index (ty + radius) * W + (tx + radius)."""
    size = rotated.shape[-1]
    device = rotated.device
    steps = torch.arange(-radius, radius + 1, device=device)
    pixels = torch.arange(size, device=device)
    rows = (pixels[None, :] - steps[:, None]) % size  # (W, S)
    source = rows[:, None, :, None] * size + rows[None, :, None, :]  # (W, W, S, S)
    return rotated.reshape(len(rotated), -1)[:, source.reshape(-1)].reshape(len(rotated), -1, size * size)


def rotate_sharp(images: torch.Tensor, angles: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Rotate (M, S, S) images (see transform_sharp)."""
    return transform_sharp(images, angles, torch.zeros(len(images), 2, device=images.device), factor)


def transform_sharp(
    images: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor, factor: int = 2
) -> torch.Tensor:
    """align.transform on a grid `factor` times finer (Fourier padded), cropped back: bilinear
    interpolation then barely attenuates the frequencies of the original grid."""
    size = images.shape[-1]
    fine = pad_spectrum(images, factor * size)
    return fourier_crop(transform(fine, angles, shifts * factor), size)


def pad_spectrum(images: torch.Tensor, size: int) -> torch.Tensor:
    """Fourier upsampling of (..., S, S) images to (..., size, size), values kept (the inverse
    of preprocess.fourier_crop)."""
    box = images.shape[-1]
    spectrum = torch.fft.rfft2(images)
    half = box // 2
    out = torch.zeros((*images.shape[:-2], size, size // 2 + 1), dtype=spectrum.dtype, device=images.device)
    out[..., :half, : half + 1] = spectrum[..., :half, :]
    out[..., size - half :, : half + 1] = spectrum[..., half:, :]
    return torch.fft.irfft2(out, s=(size, size)) * (size * size) / (box * box)


def search_mask(size: int, radius: int, device=None) -> torch.Tensor:
    return soft_mask(size, MASK_FRACTION * size - radius, device)


@torch.no_grad()
def expectation(
    images: torch.Tensor,
    ctfs: torch.Tensor,
    references: torch.Tensor,
    sigma2: torch.Tensor,
    log_prior: torch.Tensor,
    angles: torch.Tensor,
    radius: int,
    top: int = TOP_POSES,
    allowed: torch.Tensor | None = None,
) -> Posterior:
    """Posterior over (class, angle, integer shift) for (N, S, S) images at the search size.

    `allowed` (N, K) bool, when given, restricts each particle to some classes.
    """
    n, size = images.shape[0], images.shape[-1]
    device = images.device
    k, a, w2 = len(references), len(angles), (2 * radius + 1) ** 2
    masked = references * search_mask(size, radius, device)
    rotated = rotate_sharp(masked.repeat_interleave(a, 0), -angles.repeat(k))
    bank = rolled_bank(rotated, radius).reshape(k * a * w2, size * size)
    inverse = 1.0 / on_grid(sigma2, size)  # (S, S//2+1)
    inverse[0, 0] = 0.0  # the mean: normalised particles carry none, and a mask moves it
    # The norm term of each rotated template itself: interpolation changes its power a little,
    # and a norm taken from the unrotated reference would favour the exact 90 degree turns.
    power = torch.fft.rfft2(rotated).abs() ** 2 * fourier_weights(size, device)  # (K*A, S, F)
    top = min(top, k * a * w2)
    out = {key: [] for key in ("classes", "angles", "shifts", "weights", "class_probs", "ll")}
    for start in range(0, n, BATCH):
        x = images[start : start + BATCH].float()  # a float16 stack: per batch
        c = ctfs[start : start + BATCH]
        filtered = torch.fft.irfft2(torch.fft.rfft2(x) * c * inverse, s=(size, size))
        flat = filtered.reshape(len(x), -1)
        # Each row scores "slots": every class, or only its allowed ones (pruned iterations score
        # 1 to 3 of K), so the scores, their logsumexp and top-k shrink with the classes scored.
        if allowed is None:
            slots = torch.arange(k, device=device).expand(len(x), k)
            cross = (flat @ bank.T).reshape(len(x), k, a, w2)
        else:
            rows_allowed = allowed[start : start + BATCH]
            m = max(int(rows_allowed.sum(1).max()), 1)
            # each row's allowed classes first, in class order; the slots past them stay -inf
            slots = torch.argsort((~rows_allowed).long() * k + torch.arange(k, device=device), dim=1)[:, :m]
            valid = torch.gather(rows_allowed, 1, slots)
            cross = torch.full((len(x), m, a, w2), float("-inf"), device=device)
            banks = bank.reshape(k, a * w2, -1)
            for cls in torch.nonzero(rows_allowed.any(0)).flatten().tolist():
                rows, slot = torch.nonzero(valid & (slots == cls), as_tuple=True)  # a class once a row
                cross[rows, slot] = (flat[rows] @ banks[cls].T).reshape(len(rows), a, w2)
        m = slots.shape[1]
        norm = (c**2 * inverse).reshape(len(x), -1) @ power.reshape(k * a, -1).T / size**2  # (B, K*A)
        norm = torch.gather(norm.reshape(len(x), k, a), 1, slots[:, :, None].expand(-1, -1, a))
        # In place: each score block is some hundred MB, and a new one per operation cost as
        # much again in memory traffic and page faults.
        scores = cross.sub_(0.5 * norm[..., None]).reshape(len(x), m, a * w2)
        scores.add_(log_prior[slots][:, :, None])
        values, flat = scores.reshape(len(x), -1).topk(top, dim=1)  # before the logsumexp overwrites them
        # float32 is enough: logsumexp and softmax subtract the maximum first
        per_slot = logsumexp_last_(scores)  # (B, m)
        per_class = torch.full((len(x), k), float("-inf"), device=device).scatter_(1, slots, per_slot)
        total = torch.logsumexp(per_class, -1)  # (B,)
        kept = torch.softmax(values.double(), dim=1)
        cls, rest = torch.gather(slots, 1, flat // (a * w2)), flat % (a * w2)
        ia, shift = rest // w2, rest % w2
        ty, tx = shift // (2 * radius + 1) - radius, shift % (2 * radius + 1) - radius
        out["classes"].append(cls)
        out["angles"].append(angles[ia])
        out["shifts"].append(torch.stack([tx, ty], -1).float())
        out["weights"].append(kept.float())
        out["class_probs"].append(torch.exp(per_class - total[:, None]).float())
        out["ll"].append(total)
    return Posterior(
        *(torch.cat(out[key]) for key in ("classes", "angles", "shifts", "weights", "class_probs")),
        torch.cat(out["ll"]),
    )


@torch.no_grad()
def maximisation(
    images: torch.Tensor,
    ctfs: torch.Tensor,
    posterior: Posterior,
    k: int,
    sigma2: torch.Tensor,
    scale: float = 1.0,
    members: torch.Tensor | None = None,
    sharp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CTF-weighted class averages over the kept poses: (K, S, S) references and the (K, S//2+1)
    signal power tau2 each was regularised with.

    `scale` converts the posterior's shifts to these images' pixels (search at 32 px, averages
    at 64 px: scale 2). `members` (N,) bool limits the average to some particles (half sets).
    `sharp` moves the particles by transform_sharp (final averages: no interpolation blur).
    """
    move = transform_sharp if sharp else transform
    n, size = images.shape[0], images.shape[-1]
    device = images.device
    grid = (size, size // 2 + 1)
    numerator = torch.zeros((k, 2 * grid[0] * grid[1]), device=device)  # real and imaginary parts
    denominator = torch.zeros((k, grid[0] * grid[1]), device=device)
    weights = posterior.weights if members is None else posterior.weights * members[:, None]
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        x, c = images[start:stop].float(), ctfs[start:stop]  # a float16 stack: per batch
        for p in range(posterior.classes.shape[1]):
            w = weights[start:stop, p]
            keep = w > 1e-4
            if not bool(keep.any()):
                continue
            aligned = move(
                x[keep], posterior.angles[start:stop, p][keep], posterior.shifts[start:stop, p][keep] * scale
            )
            # (K x B) one-hot weights times the spectra: a matrix product, not a scatter
            assign = torch.nn.functional.one_hot(posterior.classes[start:stop, p][keep], k).T * w[keep]
            ck = c[keep]
            spectra = torch.view_as_real(torch.fft.rfft2(aligned) * ck).reshape(len(ck), -1)
            numerator += assign @ spectra
            denominator += assign @ (ck * ck).reshape(len(ck), -1)
    numerator = torch.view_as_complex(numerator.reshape(k, *grid, 2).contiguous())
    denominator = denominator.reshape(k, *grid)
    safe = denominator.clamp(min=1e-6)
    # The class's signal power: the plain average's power less its noise (sigma2 / sum w c^2).
    sig2 = on_grid(sigma2, size)
    raw = ring_mean((numerator / safe).abs() ** 2 / size**2 - sig2 / safe, size)
    tau2 = raw.clamp(min=1e-6 * float(sigma2.mean()))
    references = torch.fft.irfft2(numerator / (denominator + sig2 / on_grid(tau2, size)), s=(size, size))
    return references, tau2


def resample(profile: torch.Tensor, size: int) -> torch.Tensor:
    """A ring profile measured on a Fourier-cropped copy, on the rings of the full `size`: the
    same ring is the same frequency; rings beyond the crop take its last value."""
    index = torch.arange(size // 2 + 1, device=profile.device).clamp(max=len(profile) - 1)
    return profile[index]


@torch.no_grad()
def update_noise(
    images: torch.Tensor,
    ctfs: torch.Tensor,
    references: torch.Tensor,
    posterior: Posterior,
    floor: torch.Tensor,
) -> torch.Tensor:
    """sigma2 per ring: the particles' power less the power their best class explains."""
    size = images.shape[-1]
    power = torch.zeros(size, size // 2 + 1, device=images.device, dtype=torch.float64)
    spectra = torch.fft.rfft2(references).abs() ** 2
    best = posterior.classes[:, 0]
    for start in range(0, len(images), BATCH):
        x, c = images[start : start + BATCH].float(), ctfs[start : start + BATCH]
        residual = torch.fft.rfft2(x).abs() ** 2 - c**2 * spectra[best[start : start + BATCH]]
        power += residual.sum(0)
    sigma2 = _with_mean_ring((ring_mean(power / len(images), size) / size**2).float())
    return torch.maximum(sigma2, floor)
