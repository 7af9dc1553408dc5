"""Seconds and device memory per stage of a classification run on a GPU, estimated on paper.

`cryoclust bench --scale` writes these beside its measurements when no GPU was measured,
marked "estimate": true. The work of each stage is counted from the engine's code and its own
constants (imported, so the count follows them): floating-point operations and bytes through the
device's memory, bytes over PCIe, kernel launches, and what runs on the host (the stack's read;
the phase flip and the CTF values of the E- and M-steps are computed on the device). A stage
takes

    host seconds + max(FLOPs / (peak FLOP/s x efficiency), bytes / (bandwidth x efficiency))
    + PCIe bytes / (PCIe bandwidth x efficiency) + launches x launch cost

with nothing overlapped: the engine's loops are synchronous. Writing the round's files is not
counted (it is not in the measured stage timings either). The assumptions are in ASSUMED and go
into the JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from worker.engine import kmeans as kmeans_module
from worker.engine import likelihood, pose, poses
from worker.engine.cluster import (
    KMEANS_INITS,
    PCA_COMPONENTS,
    PCA_OVERSAMPLES,
    PCA_POWER_ITERATIONS,
    PCA_SAMPLE,
)
from worker.engine.config import STORAGE_BYTES, ClassifyConfig
from worker.engine.memory import estimate as memory_estimate
from worker.engine.model import EMBEDDING_DIM


@dataclass(frozen=True)
class Assumptions:
    device: str = "NVIDIA H100 SXM5 80 GB"
    # NVIDIA H100 datasheet: FP32 67 TFLOP/s (CUDA cores; torch's float32 matmuls do not use
    # TF32 tensor cores unless asked), HBM3 3.35 TB/s, PCIe Gen5 x16 64 GB/s each way.
    peak_flops: float = 67e12
    memory_bandwidth: float = 3.35e12
    pcie_bandwidth: float = 64e9
    compute_efficiency: float = 0.5  # of peak, for matmuls of these shapes and FFTs
    memory_efficiency: float = 0.6  # of peak, for elementwise passes and reductions
    pcie_efficiency: float = 0.4  # pageable (not pinned) host memory
    launch_seconds: float = 10e-6  # one kernel launch or host-device synchronisation
    kernels_per_batch: int = 30  # launches of one E-step batch, read off likelihood.expectation
    # Host work: only the stack's read (the CTFs and the phase flip are computed on the device).
    host_read_bandwidth: float = 5e9  # the stack read from the page cache
    cuda_context_bytes: int = 512 * 2**20
    lloyd_iterations: int = 20  # Lloyd iterations per KMeans run (the code stops on convergence)
    reseeds: int = 0  # EM classes re-seeded (each would run one E-step unpruned again)


ASSUMED = Assumptions()

# Passes over the (batch, K, angles, shifts) float32 scores in likelihood.expectation: the
# product's output (1), minus the norm (read + write: 2), plus the prior (2), logsumexp_last
# (amax 1, subtract 2, clamp 2, exp 2, sum 1: 8), topk (1).
SCORE_PASSES = 14
SINE_FLOPS = 20  # a float64 sine, counted as this many operations


@dataclass
class Work:
    """What one stage does: device FLOPs and memory bytes, PCIe bytes, launches, host seconds."""

    flops: float = 0.0
    bytes: float = 0.0
    pcie_bytes: float = 0.0
    launches: float = 0.0
    host_seconds: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, factor: float) -> Work:
        return Work(*(getattr(self, f.name) * factor for f in fields(self)))

    def seconds(self, a: Assumptions = ASSUMED) -> float:
        device = max(
            self.flops / (a.peak_flops * a.compute_efficiency),
            self.bytes / (a.memory_bandwidth * a.memory_efficiency),
        )
        transfers = self.pcie_bytes / (a.pcie_bandwidth * a.pcie_efficiency)
        return self.host_seconds + device + transfers + self.launches * a.launch_seconds


def fft_flops(size: int) -> float:
    """One real 2-D FFT of size x size (half the 5 N log2 N of a complex one)."""
    return 2.5 * size * size * math.log2(size * size)


def spectrum(size: int) -> int:
    return size * (size // 2 + 1)


def angle_count(step: float) -> int:
    return math.ceil(360.0 / step)  # poses.angle_grid: arange(0, 360, step)


def _device_ctfs(n: int, size: int, a: Assumptions) -> Work:
    """CTF values of n particles at `size`, computed on the device when read
    (ctf_device.ParticleCtfs: a float64 matrix product of 3 phase terms, a sine, a float32 copy)."""
    values = n * spectrum(size)
    return Work(flops=values * (2 * 3 + SINE_FLOPS), bytes=values * 12)


def expectation(n: int, k: int, scored: int, angles: int, size: int, storage: int, a: Assumptions) -> Work:
    """likelihood.expectation: every particle against `scored` of k classes (all k unpruned;
    PRUNE_CLASSES pruned; 1 with one allowed class) x angles x integer shifts."""
    shifts = (2 * poses.SHIFT_RADIUS + 1) ** 2
    pixels, coefficients, templates = size * size, spectrum(size), k * angles
    batches = math.ceil(n / likelihood.BATCH)
    scores = n * scored * angles * shifts  # the scores of the classes scored only
    # The template bank, once per call: each template rotated on a grid twice as fine, rolled.
    bank = Work(
        flops=templates * (2 * fft_flops(size) + 2 * fft_flops(2 * size) + 20 * 4 * pixels + fft_flops(size)),
        bytes=templates * shifts * pixels * 4 * 2,
    )
    work = Work(
        flops=n * (2 * fft_flops(size) + 6 * coefficients)  # each particle filtered by c / sigma2
        + 2 * n * scored * angles * shifts * pixels  # the cross terms: one matmul per batch
        + 2 * n * k * angles * coefficients  # the norm terms
        + 6 * scores,  # logsumexp, softmax, top-k
        bytes=n * pixels * (storage + 4 * 3)
        + batches * scored * angles * shifts * pixels * 4  # the bank read per batch
        + scores * 4 * SCORE_PASSES,
        launches=batches * (a.kernels_per_batch + (4 * k if scored < k else 0)),  # pruned: per class
    )
    return bank + work + _device_ctfs(n, size, a)


def maximisation(
    n: int, k: int, size: int, poses_kept: int, storage: int, a: Assumptions, *, sharp=False, members=1.0
) -> Work:
    """likelihood.maximisation: each particle moved to each kept pose (on a twice finer grid
    when `sharp`), its spectrum times its CTF summed into its class by a one-hot matmul.
    `members`: the share of particles with weight (a half set: 0.5); the CTFs are read for all."""
    pixels, coefficients = size * size, spectrum(size)
    moved = n * poses_kept * members
    move = 12 * pixels
    if sharp:  # pad_spectrum, transform at twice the size, fourier_crop
        move = 2 * fft_flops(size) + 2 * fft_flops(2 * size) + 12 * 4 * pixels
    work = Work(
        flops=moved * (move + fft_flops(size) + 2 * coefficients + 2 * k * 3 * coefficients),
        bytes=n * pixels * storage + moved * (pixels * 4 * (8 if sharp else 3) + coefficients * 8 * 3),
        launches=math.ceil(n / likelihood.BATCH) * poses_kept * 15,
    )
    return work + _device_ctfs(n, size, a)


def update_noise(n: int, size: int, storage: int, a: Assumptions) -> Work:
    pixels, coefficients = size * size, spectrum(size)
    work = Work(
        flops=n * (fft_flops(size) + 6 * coefficients),
        bytes=n * (pixels * storage + coefficients * 8 * 3),
        launches=math.ceil(n / likelihood.BATCH) * 8,
    )
    return work + _device_ctfs(n, size, a)


def run_em(
    n: int,
    k: int,
    iterations: int,
    coarse: int,
    size: int,
    storage: int,
    a: Assumptions,
    *,
    fresh: bool,
    posterior: bool,
) -> Work:
    """poses.run_em: each iteration an E-step (pruned to PRUNE_CLASSES once past the coarse
    iterations and a posterior exists), an M-step over TOP_POSES and a noise update. `fresh`:
    from random subsets; `posterior`: the state starts with one."""
    work = Work()
    if fresh:  # the noise spectrum and random references
        work += Work(flops=n * (fft_flops(size) + 12 * size * size), bytes=n * size * size * (storage + 8))
    for iteration in range(1, iterations + 1):
        step = poses.COARSE_STEP if iteration <= coarse else poses.FINE_STEP
        pruned = iteration > coarse and posterior and k > poses.PRUNE_CLASSES
        scored = poses.PRUNE_CLASSES if pruned else k
        work += expectation(n, k, scored, angle_count(step), size, storage, a)
        work += maximisation(n, k, size, likelihood.TOP_POSES, storage, a)
        work += update_noise(n, size, storage, a)
        posterior = True
    return work


def kmeans(n: int, dims: int, k: int, a: Assumptions) -> Work:
    """worker.engine.kmeans: KMEANS_INITS greedy k-means++ seedings and Lloyd runs on a sample,
    then Lloyd on every point (lloyd_iterations each, assumed)."""
    sample = min(n, kmeans_module.SAMPLE)
    trials = 2 + int(math.log(k))

    def lloyd(points: int) -> Work:
        chunks = math.ceil(points / kmeans_module.CHUNK_ROWS)
        return (
            Work(
                flops=2 * points * dims * k + 2 * points * dims,
                bytes=points * (dims * 4 * 2 + dims * 8 + k * 4 + 24),
                launches=chunks * 6 + 12,
            )
            * a.lloyd_iterations
        )

    seeding = Work(
        flops=k * 2 * sample * dims * trials,
        bytes=k * sample * (dims * 4 + trials * 4 * 4 + 16),
        launches=k * 12,
    )
    work = (seeding + lloyd(sample)) * KMEANS_INITS
    if n > sample:
        work += lloyd(n)
    return work


def preprocess(n: int, box: int, size: int, storage: int, ctf: bool, a: Assumptions) -> Work:
    """Read the stack on the host, move it to the device, phase flip it there (ctf_device.
    PhaseFlipper: 5 phase terms, a sine, two FFTs), normalise and Fourier-crop it, store it in
    the storage precision."""
    pixels = box * box
    host = n * pixels * 4 / a.host_read_bandwidth
    flip = n * (2 * fft_flops(box) + spectrum(box) * (2 * 5 + SINE_FLOPS + 8)) if ctf else 0.0
    crop = fft_flops(box) + fft_flops(size) if box > size else 0.0
    return Work(
        flops=n * (5 * pixels + crop) + flip,
        bytes=n * (pixels * 4 * 3 + size * size * storage) + (n * spectrum(box) * 8 * 4 if ctf else 0),
        pcie_bytes=n * pixels * 4,
        host_seconds=host,
        launches=math.ceil(n * pixels * 4 / (64 * 2**20)) * 10,
    )


def initial_labels(n: int, size: int, k: int, storage: int, a: Assumptions) -> Work:
    """cluster.pca_features (randomized SVD of a sample, every particle projected; the features
    come back to the host) and KMeans on them on the device."""
    pixels, sample = size * size, min(n, PCA_SAMPLE)
    components = max(1, min(PCA_COMPONENTS, sample - 1, pixels))
    width = min(components + PCA_OVERSAMPLES, sample, pixels)
    products = 2 + 2 * PCA_POWER_ITERATIONS
    svd = Work(
        flops=products * 2 * sample * pixels * width + (1 + 2 * PCA_POWER_ITERATIONS) * 4 * sample * width**2,
        bytes=sample * pixels * (storage + 4) + products * sample * pixels * 4,
    )
    project = Work(
        flops=2 * n * pixels * components,
        bytes=n * pixels * storage * 2,
        pcie_bytes=2 * n * components * 4,  # to the host and back for KMeans
    )
    return svd + project + kmeans(n, components, k, a)


def _round_averages(n: int, k: int, size: int, storage: int, a: Assumptions) -> Work:
    """PoseMethod.average: labels' references (one E- and M-step, one class each), the averages
    at the model size from the best poses, and two half sets refined and averaged apart."""
    search = min(poses.SEARCH_SIZE, size)
    fine = angle_count(poses.FINE_STEP)
    references = expectation(n, k, 1, fine, search, storage, a) + maximisation(
        n, k, search, likelihood.TOP_POSES, storage, a
    )
    full = maximisation(n, k, size, 1, storage, a, sharp=True)
    half = (
        expectation(n, k, 1, fine, search, storage, a)
        + maximisation(n, k, search, likelihood.TOP_POSES, storage, a, members=0.5)
    ) * pose.HALF_ITERATIONS + maximisation(n, k, size, 1, storage, a, sharp=True, members=0.5)
    return references + full + half * 2


def _mean_averages(n: int, k: int, size: int, storage: int) -> Work:
    """Round 0: class means and the half-set means for the FRC, float64 sums by index_add_."""
    return Work(flops=2 * n * size * size * 2, bytes=2 * n * size * size * (storage + 8 + 8), launches=50)


def stage_work(n: int, k: int, rounds: int, box: int, size: int, storage: int, a=ASSUMED) -> dict:
    """The work of each stage of `cryoclust classify -r ROUNDS --method pose-em` on a stack with
    CTF parameters, keyed and summed as the run's round.json timings are: round 0 (rounds 0)
    has preprocess, initial_labels, averages; later rounds add train_embed, kmeans and the last
    round's likelihood step (refine, at its most: likelihood_step). The default `pose` adds the
    network's training and embedding, which this estimate leaves out."""
    size = min(box - box % 2, size)
    search = min(poses.SEARCH_SIZE, size)
    stages = {
        "preprocess": preprocess(n, box, size, storage, True, a),
        "initial_labels": initial_labels(n, size, k, storage, a),
    }
    if rounds == 0:
        stages["averages"] = _mean_averages(n, k, size, storage)
        return stages
    crop = Work(
        flops=n * (fft_flops(size) + fft_flops(search)), bytes=n * (size * size + search * search) * storage
    )
    train = crop
    sample = pose.em_sample_size(n, k)
    fine = angle_count(poses.FINE_STEP)
    for r in range(1, rounds + 1):
        if r == 1:  # from random subsets with more classes, on a sample of a large stack
            over = pose.over_clustered(k, sample)
            start = run_em(
                sample,
                over,
                pose.FIRST_ITERATIONS,
                poses.COARSE_ITERATIONS,
                search,
                storage,
                a,
                fresh=True,
                posterior=False,
            )
            if over > k:  # merged back to k: the merged classes' references, then EM from them
                start += expectation(sample, k, 1, fine, search, storage, a)
                start += maximisation(sample, k, search, likelihood.TOP_POSES, storage, a)
                start += run_em(
                    sample, k, pose.MERGED_ITERATIONS, 0, search, storage, a, fresh=False, posterior=False
                )
            # every start, each start's fit on a sample (pose._most_likely_first_em) ...
            fit = expectation(min(n, pose.FIT_SAMPLE), k, 1, fine, search, storage, a)
            train += (start + fit) * pose.FIRST_STARTS
            if sample < n:  # ... then the kept start's pass over every particle
                train += run_em(n, k, 1, 0, search, storage, a, fresh=False, posterior=False)
        else:  # the labels' references, then EM from them
            train += expectation(n, k, 1, fine, search, storage, a)
            train += maximisation(n, k, search, likelihood.TOP_POSES, storage, a)
            train += run_em(n, k, pose.LATER_ITERATIONS, 0, search, storage, a, fresh=False, posterior=True)
        train += Work(pcie_bytes=n * k * 4)  # the class posteriors to the host: the embedding
    stages["train_embed"] = train
    stages["kmeans"] = Work(pcie_bytes=n * EMBEDDING_DIM * 4) + kmeans(n, EMBEDDING_DIM, k, a) * rounds
    stages["refine"] = likelihood_step(n, k, search, storage, a)
    stages["averages"] = _round_averages(n, k, size, storage, a) * rounds
    return stages


def likelihood_step(n: int, k: int, search: int, storage: int, a: Assumptions) -> Work:
    """pose.refine_labels at its most: the labels' references, then REFINE_ITERATIONS EM
    iterations (the first over every class, the later ones pruned), each followed by its fit
    over PRUNE_CLASSES classes on at most FIT_SAMPLE particles. Where the fit falls the step
    stops sooner: this is its upper bound."""
    fine = angle_count(poses.FINE_STEP)
    iterations = pose.REFINE_ITERATIONS
    work = expectation(n, k, 1, fine, search, storage, a)
    work += maximisation(n, k, search, likelihood.TOP_POSES, storage, a)
    work += run_em(n, k, iterations, 0, search, storage, a, fresh=False, posterior=False)
    fit_rows = min(n, pose.FIT_SAMPLE)
    return work + expectation(fit_rows, k, min(poses.PRUNE_CLASSES, k), fine, search, storage, a) * iterations


def device_peak_bytes(n: int, k: int, rounds: int, box: int, size: int, storage: int) -> int:
    """The engine's own memory estimate (worker.engine.memory) on the device, less its host
    allowance, plus a CUDA context and the E-step's template bank and score buffers."""
    size = min(box - box % 2, size)
    method = ClassifyConfig(round_num=rounds).resolved().method if rounds > 0 else None  # as pipeline.py
    need = memory_estimate(n, size, method, 128, storage, box)
    transient = 0
    if rounds > 0:
        search = min(poses.SEARCH_SIZE, size)
        templates = k * angle_count(poses.FINE_STEP) * (2 * poses.SHIFT_RADIUS + 1) ** 2
        transient = templates * search * search * 4 + 3 * likelihood.BATCH * templates * 4
    return int(need.total - need.fixed + ASSUMED.cuda_context_bytes + transient)


def gpu_estimate(
    n: int, k: int, rounds: int, box: int, size: int | None = None, storage: str | None = None
) -> dict:
    """One run's estimate as the scale benchmark records it: per stage seconds, FLOPs and
    bytes, their sum, the seconds without the host's work (the stack's read), device memory.
    `size` and `storage` default to what `cryoclust classify -r ROUNDS` would use."""
    defaults = ClassifyConfig(round_num=rounds).resolved()
    size, storage = size or defaults.size, storage or defaults.storage
    storage_bytes = STORAGE_BYTES[storage]
    stages = stage_work(n, k, rounds, box, size, storage_bytes)
    per_stage = {
        name: {
            "seconds": work.seconds(),
            "host_seconds": work.host_seconds,
            "flops": work.flops,
            "device_bytes": work.bytes,
            "pcie_bytes": work.pcie_bytes,
            "launches": work.launches,
        }
        for name, work in stages.items()
    }
    total = sum(s["seconds"] for s in per_stage.values())
    return {
        "estimate": True,
        "n": n,
        "rounds": rounds,
        "classes": k,
        "box": box,
        "model_size": min(box - box % 2, size),
        "storage": storage,
        "timings": {name: s["seconds"] for name, s in per_stage.items()},
        "stages": per_stage,
        "seconds": total,
        "seconds_without_host_work": total - sum(s["host_seconds"] for s in per_stage.values()),
        "peak_device_bytes": device_peak_bytes(n, k, rounds, box, size, storage_bytes),
    }


def assumptions() -> dict:
    return {**asdict(ASSUMED), "score_passes": SCORE_PASSES}
