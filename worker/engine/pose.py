"""The "pose" method: likelihood classification over class, in-plane angle and shift with the
CTF in the model (worker.engine.poses), and the Siamese network trained on the aligned particles.

One round:
1. EM at the search size (32 px): round 1 starts from random subsets with twice the classes
   asked for and merges the classes the posterior cannot tell apart back to K (merge.py), so
   close views are not left in one class; it does so from FIRST_STARTS random starts and keeps
   the one under which the particles are most probable. Later rounds start from the previous
   round's labels (each label class aligned to the reference most of it came from).
2. Every particle is brought to its most probable pose, masked, and the Siamese network (at the
   search size) learns contrastive pairs on these aligned, phase-flipped particles: partners
   from the same EM class, and each second image re-posed by a small random rotation and shift,
   so a particle and its re-posed copy count as the same. Its loss is the page's live curve.
   Above NETWORK_SAMPLE particles it learns from a seeded sample of them.
3. Every aligned particle is embedded; the pipeline's KMeans on the embedding gives the labels.
4. Boxes whose likelihood is no better than an empty box's (worker.engine.empty_boxes) are
   flagged after the EM; when there are enough of them, the pipeline gives them a class in the
   run's last round.
5. In the last round, the likelihood step runs on the round's classes (`refine_labels`):
   references from the labels, then EM iterations over every class and pose (no class
   re-seeded: the classes are the network's) while each leaves the particles more probable
   than the one before, at most REFINE_ITERATIONS, and each particle takes its most probable
   class under the best of them. KMeans on the embedding alone lost purity that the EM
   posterior had (benchmarks/network_vs_em.py); started from the network's classes, the EM keeps what the
   network separated and settles the borders. Earlier rounds need no such step: the next
   round's EM starts from their labels anyway.

`network=False` is the ablation: the embedding is then the one-hot of the EM class posterior,
so KMeans returns the EM labels themselves, and the likelihood step starts from them.

Class averages (`average`): each particle moves by its best pose and is averaged at full size
with its CTF (Wiener-like). In the last round (after the likelihood step) that pose is first
refined locally against its class's full-size average (worker.engine.local_poses); earlier
rounds' averages are previews at the search grid's poses. The two half sets (even and odd
members) are refined independently from the same low-passed start, for a gold-standard FRC (at
the search grid's poses: a conservative figure).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from worker.engine.align import soft_mask, transform
from worker.engine.config import DEFAULT_MASK_FRACTION, ClassifyConfig
from worker.engine.ctf import CtfParams
from worker.engine.empty_boxes import empty_rows
from worker.engine.events import Callback, EpochDone, LossPoint
from worker.engine.likelihood import (
    TOP_POSES,
    Posterior,
    expectation,
    maximisation,
    noise_spectrum,
    particle_ctfs,
    resample,
    search_mask,
)
from worker.engine.local_poses import refine_best
from worker.engine.merge import merge_groups
from worker.engine.model import EMBEDDING_DIM
from worker.engine.pairs import PairSampler
from worker.engine.poses import (
    FINE_STEP,
    PRUNE_CLASSES,
    SEARCH_SIZE,
    SHIFT_RADIUS,
    EmState,
    angle_grid,
    references_from_labels,
    run_em,
)
from worker.engine.preprocess import fourier_crop, normalise
from worker.engine.side_by_side import side_by_side

FIRST_ITERATIONS = 10  # EM iterations in round 1 (from random subsets)
# Round 1's EM runs from this many random starts; the most likely one is kept. Two, not three:
# on 12 development stacks a third start would have been kept twice, for ARI -0.005 and +0.036,
# and it costs half again round 1's EM (README, *Round 1 from random starts*).
FIRST_STARTS = 2
START_SEED_STEP = 1_000_003  # seed offset between the starts (the first keeps the round's seed)
FIT_SAMPLE = 20_000  # the starts are compared on a seeded sample of at most this many particles
LATER_ITERATIONS = 2  # EM iterations in later rounds (from the previous labels)
MAX_EPOCHS = 5  # the network's epochs per round (fewer when epoch_num is smaller)
REPOSE_ANGLE = 8.0  # degrees: the re-posed copy's largest extra rotation
REPOSE_SHIFT = 1.0  # px at the network size
NETWORK_BATCH = 32  # pairs per step: a few epochs of small batches give the network enough steps
NETWORK_SIZE = 24  # px: the aligned particles the network learns from (Fourier-cropped)
NETWORK_THREADS = 1  # CPU threads for this small network (see train.cpu_threads)
HALF_ITERATIONS = 1  # independent refinement rounds of each half set
HALF_START_RING = 0.25  # the half sets start from their reference low-passed to this fraction of Nyquist
CROP_BATCH = 4096  # particles Fourier-cropped to the search size at a time
EM_SAMPLE = 20_000  # round 1 iterates on a sample of this many particles of a larger stack
EM_SAMPLE_PER_CLASS = 200  # ... or of this many per class, when that is more
NETWORK_SAMPLE = 20_000  # the network learns from at most this many particles, then embeds all
OVER_CLUSTERING = 2.0  # round 1's EM runs with this many times the classes asked for (see merge.py)
MIN_OVER_CLASS = 50  # ... while each of them keeps this many particles on average
MERGED_ITERATIONS = 2  # EM iterations after the merge back to the classes asked for
MEMBER_CHUNK = 65_536  # a half set's particles scored (and copied) at a time
REFINE_ITERATIONS = 6  # the most EM iterations from the last round's classes (they stop when the fit falls)


class PoseMethod:
    """Likelihood pose search + Siamese network on aligned particles (see module doc)."""

    name = "pose"

    def __init__(self, network: bool = True) -> None:
        self.network = network
        self.ctf: CtfParams | None = None
        self.pixel_size = 1.0
        self.flipped = False
        self.mask_diameter: float | None = None  # Å; None: DEFAULT_MASK_FRACTION of the box
        self.state: EmState | None = None
        self._small: torch.Tensor | None = None
        self._ctfs: torch.Tensor | None = None
        self._power: torch.Tensor | None = None  # noise_spectrum of the search copy, set with it
        self.final_poses: tuple[Posterior, torch.Tensor, int] | None = None  # set by `average`
        self._empty: np.ndarray | None = None  # set by train_round
        # Whether the state is the last round's likelihood step's (refine_labels): only then do
        # the averages refine the poses locally; earlier rounds' galleries are previews.
        self.refined = False

    # -- the pipeline's hooks ---------------------------------------------------------------
    def set_optics(
        self, ctf: CtfParams | None, pixel_size: float, flipped: bool, mask_diameter: float | None = None
    ) -> None:
        """The particles' CTFs, the pixel size at the model size, whether they were flipped, and
        the diameter in Å of the averages' mask (None: DEFAULT_MASK_FRACTION of the box)."""
        self.ctf, self.pixel_size, self.flipped = ctf, pixel_size, flipped
        self.mask_diameter = mask_diameter

    def epochs(self, config: ClassifyConfig) -> int:
        """The network's epochs per round; without the network, one pass (of EM iterations)."""
        return min(config.epoch_num, MAX_EPOCHS) if self.network else 1

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything the next round needs beyond the labels (saved for resuming)."""
        s, p = self.state, self.state.posterior
        tensors = {
            "references": s.references,
            "sigma2": s.sigma2,
            "log_prior": s.log_prior,
            "classes": p.classes,
            "angles": p.angles,
            "shifts": p.shifts,
            "weights": p.weights,
            "class_probs": p.class_probs,
            "log_likelihood": p.log_likelihood,
        }
        arrays = {key: value.cpu().numpy() for key, value in tensors.items()}
        return {**arrays, "refined": np.array(self.refined)}

    def load_state(self, arrays: dict[str, np.ndarray], device) -> None:
        t = {key: torch.as_tensor(value, device=device) for key, value in arrays.items()}
        posterior = Posterior(
            t["classes"], t["angles"], t["shifts"], t["weights"], t["class_probs"], t["log_likelihood"]
        )
        self.state = EmState(t["references"], t["sigma2"], t["log_prior"], posterior)
        self.refined = bool(arrays.get("refined", False))  # states saved before the flag: False

    def empty_rows(self) -> np.ndarray | None:
        """The round's boxes that look empty (bool (N,)), or None (see worker.engine.empty_boxes)."""
        return self._empty

    def round_scores(self) -> dict[str, float]:
        """The round's convergence figure: the mean over particles of the log-likelihood summed
        over every pose (at the search size; it rises as the references fit better)."""
        return {"mean_log_likelihood": float(self.state.posterior.log_likelihood.mean())}

    # -- one round --------------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> None:
        if self._small is None or len(self._small) != len(images):
            size = images.shape[-1]
            search = min(SEARCH_SIZE, size)
            # Batch by batch: spectra and float32 copies of a batch, never of the whole stack. The
            # search copy keeps the stack's storage precision (float16 by default); the E- and
            # M-steps convert a batch at a time, and the CTFs are computed when read.
            self._small = torch.empty((len(images), search, search), dtype=images.dtype, device=images.device)
            for start in range(0, len(images), CROP_BATCH):
                batch = images[start : start + CROP_BATCH].reshape(-1, size, size).float()
                self._small[start : start + CROP_BATCH] = fourier_crop(batch, search)
            self._ctfs = particle_ctfs(
                self.ctf, len(images), search, self.pixel_size * size / search, self.flipped, images.device
            )
            self._power = noise_spectrum(self._small)

    def train_round(
        self,
        images: torch.Tensor,
        labels: np.ndarray,
        config: ClassifyConfig,
        round_index: int,
        generator: torch.Generator,
        on_event: Callback,
    ) -> tuple[np.ndarray, dict]:
        self._prepare(images)
        self.refined = False
        small, ctfs, k = self._small, self._ctfs, config.cluster_num
        seed = config.seed * 1000 + round_index
        n = len(images)
        # Without the network the EM iterations are the round's work: a loss point (the negative
        # mean log-likelihood) after each, with the share of the round done, for the live curve
        # and the progress bars. With the network, its training reports instead.
        first = self.state is None
        iterations = first_iterations(n, k) if first else LATER_ITERATIONS

        def progress(iteration: int, state: EmState) -> None:
            if not self.network:
                loss = float(-state.posterior.log_likelihood.mean())
                on_event(LossPoint(round_index, 1, iteration, n * iteration // iterations, loss))

        started = time.perf_counter()
        if first:
            self.state = _most_likely_first_em(small, ctfs, k, seed, progress, self._power)
        else:
            self.state.references = references_from_labels(small, ctfs, labels, k, self.state)
            self.state = run_em(
                small,
                ctfs,
                k,
                LATER_ITERATIONS,
                seed,
                state=self.state,
                on_iteration=progress,
                coarse_iterations=0,
                power=self._power,
            )
        posterior = self.state.posterior
        self._empty = empty_rows(small, self.state, ctfs, seed) if k >= 2 else None
        if not self.network:
            embedding = np.zeros((n, EMBEDDING_DIM), dtype=np.float32)
            embedding[:, : min(k, EMBEDDING_DIM)] = posterior.class_probs[:, :EMBEDDING_DIM].cpu().numpy()
            loss = float(-posterior.log_likelihood.mean())
            on_event(EpochDone(round_index, 1, loss, time.perf_counter() - started))
            return embedding, {"loss": loss}
        return self._network_round(config, round_index, generator, on_event)

    def aligned_particles(self) -> torch.Tensor:
        """Every particle at its most probable pose, masked, at the network's size: (N, 1, s, s)."""
        _, angle, shift = self.state.posterior.best()
        small = self._small
        size = min(NETWORK_SIZE, small.shape[-1])
        mask = search_mask(small.shape[-1], SHIFT_RADIUS, small.device)
        aligned = torch.empty((len(small), 1, size, size), device=small.device)
        for start in range(0, len(small), CROP_BATCH):
            rows = slice(start, start + CROP_BATCH)
            moved = transform(small[rows].float(), angle[rows], shift[rows]) * mask
            aligned[rows, 0] = normalise(fourier_crop(moved, size))
        return aligned

    def _network_round(self, config, round_index, generator, on_event) -> tuple[np.ndarray, dict]:
        from worker.engine.train import cpu_threads

        aligned = self.aligned_particles()
        with cpu_threads(aligned.device, NETWORK_THREADS):
            return self._train_and_embed(aligned, config, round_index, generator, on_event)

    def _train_and_embed(self, aligned, config, round_index, generator, on_event) -> tuple[np.ndarray, dict]:
        from dataclasses import replace

        from worker.engine.train import embed, fresh_network, train_network

        network = fresh_network(aligned.shape[-1], aligned.device, config.seed + round_index)
        classes = self.state.posterior.classes[:, 0]
        learn = network_sample(len(aligned), config.seed * 1000 + round_index, aligned.device)
        report = on_event
        if learn is not None:  # a large stack: epochs over a sample, the embedding of every particle
            aligned_sample, classes = aligned[learn], classes[learn]
            scale = len(aligned) / len(learn)

            def report(event) -> None:  # progress in epochs of the round, as the bars count them
                if isinstance(event, LossPoint):
                    event = replace(event, pairs_done=round(event.pairs_done * scale))
                on_event(event)
        else:
            aligned_sample = aligned
        sampler = PairSampler.from_labels(classes.contiguous())
        short = replace(
            config, epoch_num=self.epochs(config), batch_size=min(config.batch_size, NETWORK_BATCH)
        )
        loss = train_network(
            network, aligned_sample, sampler, short, round_index, generator, report, augment=_repose
        )
        embedding = embed(network, aligned, config.precision, on_event, round_index)
        return embedding, {"network": network, "loss": loss}

    # -- the last round's likelihood step ---------------------------------------------------
    def refine_labels(
        self,
        labels: np.ndarray,
        k: int,
        empty_class: int | None,
        seed: int,
        on_iteration: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """The likelihood step on the last round's classes (module doc, item 5): labels (N,) in
        [0, k) after the EM iterations started from `labels` (_iterate_while_fit_rises); the
        boxes flagged as empty stay in `empty_class`, which takes no new members.
        `on_iteration(done, total)` after each iteration, and (total, total) at the end."""
        small, ctfs = self._small, self._ctfs
        state = EmState(self.state.references, self.state.sigma2, self.state.log_prior, self.state.posterior)
        state.references = references_from_labels(small, ctfs, labels, k, state)
        counts = np.bincount(labels, minlength=k).clip(min=1)
        state.log_prior = torch.log(
            torch.as_tensor(counts / counts.sum(), dtype=torch.float32, device=small.device)
        )
        state.posterior = None  # every particle is scored against every class ...
        self.state = state  # (the round's posterior goes now: a large stack holds one at a time)
        permitted = None
        if empty_class is not None and self._empty is not None:
            # ... but the empty class: it keeps the boxes flagged as empty and takes no new
            # members (its reference of near-nothing would draw the faintest particles).
            flagged = torch.as_tensor(self._empty, device=small.device)
            permitted = torch.ones((len(small), k), dtype=torch.bool, device=small.device)
            permitted[:, empty_class] = flagged | torch.as_tensor(labels == empty_class, device=small.device)
            permitted[flagged] = False
            permitted[flagged, empty_class] = True
        self.state = self._iterate_while_fit_rises(state, k, seed, permitted, on_iteration)
        self.refined = True
        return self.state.posterior.classes[:, 0].cpu().numpy().astype(labels.dtype)

    def _iterate_while_fit_rises(self, state: EmState, k: int, seed: int, permitted, on_iteration) -> EmState:
        """EM iterations from `state` (whose posterior is None), one at a time, while each leaves
        the particles more probable than the one before, at most REFINE_ITERATIONS; returns the
        state of the best fit. The fit is start_fit's, over each particle's PRUNE_CLASSES most
        probable classes (on a seeded sample of FIT_SAMPLE particles of a larger stack). Where
        the last round's classes are already good, further iterations let a view spread into its
        neighbours' classes, and the fit falls as they do (README, *The last round's likelihood
        step*)."""
        small, ctfs = self._small, self._ctfs
        rows = fit_rows(len(small), seed)
        index = None if rows is None else torch.as_tensor(rows, device=small.device)
        fit_images = small if rows is None else small[index]
        fit_ctfs = ctfs if rows is None else ctfs.take(rows)
        best, best_fit = state, -float("inf")
        for iteration in range(1, REFINE_ITERATIONS + 1):
            # One iteration a call: the first scores every class (no posterior yet), the later
            # ones prune, as one call of several iterations would.
            state = run_em(
                small,
                ctfs,
                k,
                1,
                seed,
                state=state,
                coarse_iterations=0,
                reseed=False,
                permitted=permitted,
                power=self._power,
            )
            probs = state.posterior.class_probs if rows is None else state.posterior.class_probs[index]
            likely = torch.zeros_like(probs, dtype=torch.bool)
            likely.scatter_(1, probs.topk(min(PRUNE_CLASSES, k), dim=1).indices, True)
            fit = start_fit(fit_images, fit_ctfs, state, self._power, allowed=likely)
            if fit <= best_fit:
                break
            best, best_fit = EmState(state.references, state.sigma2, state.log_prior, state.posterior), fit
            if on_iteration is not None:
                on_iteration(iteration, REFINE_ITERATIONS)
        if on_iteration is not None:
            on_iteration(REFINE_ITERATIONS, REFINE_ITERATIONS)  # the bar ends full when it stops early
        return best

    # -- averages ---------------------------------------------------------------------------
    def average(self, images: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
        """CTF-weighted aligned averages at full size; half sets refined independently."""
        self._prepare(images)
        size = images.shape[-1]
        full = images.reshape(-1, size, size)  # as stored: maximisation converts each batch
        full_ctfs = particle_ctfs(self.ctf, len(full), size, self.pixel_size, self.flipped, full.device)
        small, ctfs = self._small, self._ctfs
        scale = size / small.shape[-1]
        state = EmState(self.state.references, self.state.sigma2, self.state.log_prior, self.state.posterior)
        references = references_from_labels(small, ctfs, labels, k, state)
        sigma2_full = resample(state.sigma2, size) * (size / small.shape[-1]) ** 2  # per-pixel units
        best = state.posterior.best_only()  # the neighbours' share of the weight would blur
        if self.refined:  # the last round's: each best pose refined locally (worker.engine.local_poses)
            draft, _ = maximisation(full, full_ctfs, best, k, sigma2_full, scale)
            best = refine_best(full, full_ctfs, best, draft, sigma2_full, scale)
        averages, _ = maximisation(full, full_ctfs, best, k, sigma2_full, scale, sharp=True)
        averages = _masked(averages, self._average_mask(size, self.pixel_size, full.device))
        self.final_poses = (best, state.sigma2, k)  # for average_at: the same poses at any size
        labels_t = torch.as_tensor(labels, device=full.device)
        parity = torch.zeros(len(labels), dtype=torch.bool, device=full.device)
        for c in range(k):
            members = torch.nonzero(labels_t == c).flatten()
            parity[members[1::2]] = True
        halves = torch.zeros((k, 2, size, size), device=full.device)
        start = _low_passed(references, HALF_START_RING)
        allowed = torch.nn.functional.one_hot(labels_t, k).bool()  # the other half gets no weight
        for h, members in enumerate((~parity, parity)):
            reference = start
            for _ in range(HALF_ITERATIONS):
                posterior = _expect_members(
                    small, ctfs, members, reference, state.sigma2, angle_grid(FINE_STEP, full.device), allowed
                )
                reference, _ = maximisation(small, ctfs, posterior, k, state.sigma2, members=members.float())
            halves[:, h], _ = maximisation(
                full,
                full_ctfs,
                posterior.best_only(),
                k,
                sigma2_full,
                scale,
                members=members.float(),
                sharp=True,
            )
        self.half_averages = halves.cpu().numpy()
        return averages.cpu().numpy().astype(np.float32)

    def average_at(self, images: torch.Tensor, labels: np.ndarray, k: int, pixel_size: float) -> np.ndarray:
        """The last `average`'s classes at another size: every particle of `images` (N, 1, B, B),
        normalised and phase-flipped as at the model size, moved by its best pose (shifts scaled
        from the search size by B / search size) and averaged with its CTF at `pixel_size` (Å/px
        of these images). Used for the averages at the input's full box. The classes are those
        of the poses (the labels `average` was given)."""
        best, sigma2, k = self.final_poses
        size = images.shape[-1]
        full = images.reshape(-1, size, size)
        ctfs = particle_ctfs(self.ctf, len(full), size, pixel_size, self.flipped, full.device)
        search = self._small.shape[-1]
        sigma2_full = resample(sigma2, size) * (size / search) ** 2  # per-pixel units
        averages, _ = maximisation(full, ctfs, best, k, sigma2_full, size / search, sharp=True)
        averages = _masked(averages, self._average_mask(size, pixel_size, full.device))
        return averages.cpu().numpy().astype(np.float32)

    def _average_mask(self, size: int, pixel_size: float, device) -> torch.Tensor:
        """The soft circle the averages are masked with, at `size` px of `pixel_size` Å. Outside
        the particle an average holds only noise (the half sets stay unmasked: their FRC is
        measured over the whole box, as before)."""
        if self.mask_diameter is None:
            radius = DEFAULT_MASK_FRACTION * size / 2
        else:
            radius = self.mask_diameter / 2 / pixel_size
        return soft_mask(size, radius, device)


def _masked(averages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K, S, S) averages less their background level (their mean where the mask is 0), masked.
    Normalised particles have a mean of 0 over the box, so an average's background is not 0:
    masked as it is, that level would become a disc."""
    outside = mask == 0
    if bool(outside.any()):
        averages = averages - averages[:, outside].mean(1)[:, None, None]
    return averages * mask


def em_sample_size(n: int, k: int) -> int:
    """How many particles round 1's EM iterations run on: all of a small stack; of a large one a
    seeded sample of EM_SAMPLE, or EM_SAMPLE_PER_CLASS for each class when that is more."""
    return min(n, max(EM_SAMPLE, EM_SAMPLE_PER_CLASS * k))


def network_sample(n: int, seed: int, device) -> torch.Tensor | None:
    """The rows the network learns from: None (all) up to NETWORK_SAMPLE particles, else a
    seeded sample of NETWORK_SAMPLE. Its epochs are over the sample, so a round's training costs
    the same at 100,000 or 1,000,000 particles; its forward pass then embeds every particle."""
    if n <= NETWORK_SAMPLE:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(n, NETWORK_SAMPLE, replace=False))
    return torch.as_tensor(rows, device=device)


def _first_em(small: torch.Tensor, ctfs, k: int, seed: int, on_iteration=None, power=None) -> EmState:
    """Round 1's EM from random subsets, with OVER_CLUSTERING times k classes; the classes whose
    particles the posterior cannot tell apart are then merged back to k (worker.engine.merge) and
    MERGED_ITERATIONS more iterations settle the k classes. On a large stack the iterations run on a seeded sample
    (the references and noise model are settled long before every particle has been scored ten
    times); the state's posterior is then None, and the caller's one E- and M-step over every
    particle gives each its classes and poses."""
    n = len(small)
    sample = em_sample_size(n, k)
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if sample < n else None
    part = small if rows is None else small[torch.as_tensor(rows, device=small.device)]
    part_ctfs = ctfs if rows is None else ctfs.take(rows)
    if rows is not None or power is None:
        power = noise_spectrum(part)
    done = 0

    def counted(iteration: int, state: EmState) -> None:
        if on_iteration is not None:
            on_iteration(done + iteration, state)

    over = over_clustered(k, len(part))
    state = run_em(part, part_ctfs, over, FIRST_ITERATIONS, seed, on_iteration=counted, power=power)
    done = FIRST_ITERATIONS
    if over > k:
        best = state.posterior.classes[:, 0]
        groups = torch.as_tensor(merge_groups(state.posterior.class_probs, best, k), device=small.device)
        merged = groups[best]
        state.references = references_from_labels(part, part_ctfs, merged.cpu().numpy(), k, state)
        counts = torch.bincount(merged, minlength=k).float().clamp(min=1)
        state.log_prior = torch.log(counts / counts.sum())
        state.posterior = None  # the merged classes' first E-step scores every class
        state = run_em(
            part,
            part_ctfs,
            k,
            MERGED_ITERATIONS,
            seed,
            state=state,
            on_iteration=counted,
            coarse_iterations=0,
            power=power,
        )
        done += MERGED_ITERATIONS
    if rows is not None:
        state.posterior = None  # the sample's: _most_likely_first_em scores every particle
    return state


def _most_likely_first_em(
    small: torch.Tensor, ctfs, k: int, seed: int, on_iteration=None, power=None
) -> EmState:
    """Round 1's EM (_first_em) from FIRST_STARTS random starts, keeping the one under which the
    particles are most probable: the mean over a fixed sample of each particle's log-likelihood
    summed over every class and pose, under one noise model for all (the particles' own power
    spectrum; each start's own estimate would make the figures incomparable). Where round 1
    ends decides much of the run: from three starts on development stacks the final ARI spread
    over 0.58-0.76 (blobs10), 0.58-0.63 (ring10-pink-junk) and 0.29-0.48
    (blobs10-lowsnr-pink), and this likelihood ranked the three starts exactly as their ARI
    (README, *Round 1 from random starts*, for why two are run)."""
    n = len(small)
    rows = fit_rows(n, seed)
    fit_images = small if rows is None else small[torch.as_tensor(rows, device=small.device)]
    fit_ctfs = ctfs if rows is None else ctfs.take(rows)
    power = noise_spectrum(small) if power is None else power
    noise = power if rows is None else noise_spectrum(fit_images)
    per_start = _start_iterations(n, k)

    def one_start(start: int, report) -> tuple[EmState, float]:
        def counted(iteration: int, state: EmState) -> None:
            if report is not None:
                report(start * per_start + iteration, state)

        state = _first_em(small, ctfs, k, seed + START_SEED_STEP * start, counted, power)
        return state, start_fit(fit_images, fit_ctfs, state, noise)

    # On a CPU the starts run at once, one thread each (worker.engine.side_by_side).
    best, best_fit = None, -float("inf")
    for state, fit in side_by_side(one_start, FIRST_STARTS, small.device, on_iteration):
        if fit > best_fit:  # in start order: a tie keeps the earlier start
            best, best_fit = state, fit
    if best.posterior is not None:
        return best
    # A large stack's starts ran on samples; only the kept one scores every particle.
    done = FIRST_STARTS * per_start

    def last(iteration: int, state: EmState) -> None:
        if on_iteration is not None:
            on_iteration(done + iteration, state)

    return run_em(small, ctfs, k, 1, seed, state=best, on_iteration=last, coarse_iterations=0, power=power)


def fit_rows(n: int, seed: int) -> np.ndarray | None:
    """The particles a fit (start_fit) is taken over: None (all) up to FIT_SAMPLE, else a sorted
    seeded sample of FIT_SAMPLE."""
    if n <= FIT_SAMPLE:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, FIT_SAMPLE, replace=False))


def start_fit(
    images: torch.Tensor, ctfs, state: EmState, noise: torch.Tensor, allowed: torch.Tensor | None = None
) -> float:
    """How well a state explains the particles: the mean over them of their log-likelihood summed
    over every class (or each particle's `allowed` ones, (N, K) bool), fine angle and shift,
    under the noise spectrum `noise` (the same for every state compared)."""
    angles = angle_grid(FINE_STEP, images.device)
    posterior = expectation(
        images, ctfs, state.references, noise, state.log_prior, angles, SHIFT_RADIUS, allowed=allowed
    )
    return float(posterior.log_likelihood.mean())


def over_clustered(k: int, n: int) -> int:
    """Classes of round 1's first EM: OVER_CLUSTERING x k, while each keeps MIN_OVER_CLASS
    particles on average; never fewer than k."""
    return max(k, min(int(OVER_CLUSTERING * k), n // MIN_OVER_CLASS))


def first_iterations(n: int, k: int) -> int:
    """EM iterations of round 1, every start's (the progress bars' length)."""
    return FIRST_STARTS * _start_iterations(n, k) + (em_sample_size(n, k) < n)


def _start_iterations(n: int, k: int) -> int:
    """EM iterations of one start of round 1 (on the sample of a large stack)."""
    return FIRST_ITERATIONS + (MERGED_ITERATIONS if over_clustered(k, em_sample_size(n, k)) > k else 0)


def _expect_members(
    small: torch.Tensor,
    ctfs,
    members: torch.Tensor,
    references: torch.Tensor,
    sigma2: torch.Tensor,
    angles: torch.Tensor,
    allowed: torch.Tensor,
) -> Posterior:
    """The E-step of a half set: the particles flagged in `members` (N,) only, a chunk at a time
    (half the stack's scoring, never a copy of it whole), against their allowed references with
    a flat prior. The others keep weight 0, so the M-steps leave them out. Over all N particles."""
    rows = torch.nonzero(members).flatten()
    n, k, device = len(small), len(references), small.device
    top = min(TOP_POSES, k * len(angles) * (2 * SHIFT_RADIUS + 1) ** 2)
    out = Posterior(
        torch.zeros((n, top), dtype=torch.long, device=device),
        torch.zeros((n, top), device=device),
        torch.zeros((n, top, 2), device=device),
        torch.zeros((n, top), device=device),
        torch.zeros((n, k), device=device),
        torch.zeros(n, device=device),
    )
    flat_prior = torch.zeros(k, device=device)
    for start in range(0, len(rows), MEMBER_CHUNK):
        index = rows[start : start + MEMBER_CHUNK]
        part = expectation(
            small[index],
            ctfs.take(index.cpu().numpy()),
            references,
            sigma2,
            flat_prior,
            angles,
            SHIFT_RADIUS,
            allowed=allowed[index],
        )
        for field in ("classes", "angles", "shifts", "weights", "class_probs", "log_likelihood"):
            getattr(out, field)[index] = getattr(part, field)
    return out


def _low_passed(images: torch.Tensor, fraction: float) -> torch.Tensor:
    size = images.shape[-1]
    fy = torch.fft.fftfreq(size, device=images.device)[:, None]
    fx = torch.fft.rfftfreq(size, device=images.device)[None, :]
    keep = (torch.sqrt(fx**2 + fy**2) <= 0.5 * fraction).float()
    return torch.fft.irfft2(torch.fft.rfft2(images) * keep, s=(size, size))


def _repose(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A small random rotation and shift of each (B, 1, s, s) image: the same particle re-posed."""
    b, device = len(images), images.device
    angles = (torch.rand(b, generator=generator, device=device) * 2 - 1) * REPOSE_ANGLE
    shifts = (torch.rand((b, 2), generator=generator, device=device) * 2 - 1) * REPOSE_SHIFT
    return transform(images[:, 0], angles, shifts)[:, None]
