"""Will a run fit in memory? Estimated before preprocessing, so that a job too large for the
machine stops at once with one line, instead of meeting the kernel's OOM killer halfway.

The estimate, for N particles at the model size S:

    stored stack      N x S x S values in the storage precision (the preprocessed tensor)
  + working memory    what the heaviest stage holds besides the stack: the initial labels' PCA
                      sample and features (initial_labels_bytes()), or a round's float32 copies
                      of the stack at S (working_copies(), per method), whichever is larger;
                      read off the code, checked by peak RSS
  + the network       the Siamese network's weights, gradients and Adam moments and a batch's
                      activations (reference method; the pose method's network is small)
  + full-size stack   the last round's averages at the input's box (every method), with the
                      CTFs the pose methods use, when they are made (the stack at full size
                      within FULL_SIZE_BYTES)
  + a fixed allowance Python, torch and the read buffers (FIXED_BYTES)

It is compared with what the machine has: MemAvailable from /proc/meminfo (or psutil
elsewhere), lowered by a cgroup's memory.max when the process runs in one, or the free memory of
the GPU when the stack lives there. The environment variable CRYOCLUST_MEMORY_LIMIT_BYTES sets
that figure by hand (a test, or a machine shared with other work).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from worker.engine.cluster import PCA_COMPONENTS, PCA_SAMPLE
from worker.engine.errors import InputError

GIB = 2**30
MEMORY_LIMIT_ENV = "CRYOCLUST_MEMORY_LIMIT_BYTES"
FIXED_BYTES = 1 * GIB  # Python, torch and its thread pools, read buffers (about 0.55 GiB measured)
FULL_SIZE_BYTES = 4 * GIB  # the full-size particles are held at once; a larger stack goes without
ADAM_BYTES_PER_WEIGHT = 16  # weight, gradient and two Adam moments in float32
ACTIVATION_VALUES_PER_PIXEL = 80  # per image and pixel: the conv blocks' outputs kept for backward
SMALLEST_SIZE = 16  # the smallest model size a suggestion goes down to


class NotEnoughMemory(InputError):
    """The run cannot fit in the memory this machine (or GPU) has; the message says what would."""


@dataclass(frozen=True)
class Estimate:
    stored: int  # the preprocessed stack
    working: int  # what the heaviest stage holds besides the stack
    network: int
    full_size: int  # the pose methods' full-size stack and CTFs for the last averages
    fixed: int

    @property
    def total(self) -> int:
        return self.stored + self.working + self.network + self.full_size + self.fixed


def initial_labels_bytes(n: int, size: int) -> int:
    """The initial labels' PCA: its sample (at most PCA_SAMPLE particles) in float32, the
    features of every particle, their centred copy in KMeans and its per-point arrays (squared
    norm, distance, labels now and before: 24 bytes, 32 counted). The stack itself is projected
    a chunk at a time (measured with /usr/bin/time: 20,000 particles at 64 px in float16, peak RSS
    0.09 GiB above the stack with a sample of 5,000, 0.30 GiB with all 20,000 as the sample)."""
    return min(n, PCA_SAMPLE) * size * size * 4 + n * (2 * PCA_COMPONENTS * 4 + 32)


def working_copies(method: str | None, size: int, storage_bytes: int) -> float:
    """Float32 copies of the stack at model size S that a method's rounds hold at once.

    Averages and FRC half sets are summed batch by batch, and the pose methods compute their
    CTFs a batch at a time. pose-em: the particles at the search size (32 px) in the storage
    precision. pose: besides, the aligned particles at the network's 24 px in float32.
    invariant: the spectrum of the whole stack for its Fourier crops (one copy), the crops, a
    class's aligned members; a float16 stack is first converted whole (one more). reference and
    round 0 (`method` None): batches only.
    """
    search = 32 * 32 * storage_bytes / 4
    if method == "pose-em":
        return search / (size * size)
    if method == "pose":
        return (search + 24 * 24) / (size * size)
    if method == "invariant":
        return 2.0 + (1.0 if storage_bytes < 4 else 0.0)
    return 0.0


def estimate(
    n: int, size: int, method: str | None, batch_size: int, storage_bytes: int = 4, box: int | None = None
) -> Estimate:
    """The memory a run of n particles at model size `size` needs (see the module docstring);
    `box` is the input's, for the pose methods' full-size averages."""
    pixels = size * size
    network = 0
    if method == "reference":
        weights = 8 * pixels * 500 + 500 * 100 + 100 * 20
        network = ADAM_BYTES_PER_WEIGHT * weights + 2 * batch_size * ACTIVATION_VALUES_PER_PIXEL * pixels * 4
    full_size = 0
    if box is not None:  # every method's last averages at the input's box (CTFs per batch)
        full = box - box % 2
        stack = n * full * full * storage_bytes
        if stack <= FULL_SIZE_BYTES:
            full_size = stack
    return Estimate(
        stored=n * pixels * storage_bytes,
        working=max(
            int(working_copies(method, size, storage_bytes) * n * pixels * 4), initial_labels_bytes(n, size)
        ),
        network=network,
        full_size=full_size,
        fixed=FIXED_BYTES,
    )


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves (memory.max less memory.current), if one is set."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((base / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def available_bytes(device=None) -> tuple[int, str]:
    """Memory the run may use and what holds it ("this machine", "cuda:0"): the override,
    the GPU's free memory when `device` is one, else the host's available memory."""
    override = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if override:
        try:
            value = int(float(override))
        except ValueError:
            raise ValueError(f"{MEMORY_LIMIT_ENV}={override!r} is not a number of bytes") from None
        if value <= 0:
            raise ValueError(f"{MEMORY_LIMIT_ENV}={override!r} must be a positive number of bytes")
        return value, "this machine"
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free), str(device)
    found = _meminfo_available()
    if found is None:
        import psutil

        found = int(psutil.virtual_memory().available)
    room = _cgroup_room()
    return (min(found, room) if room is not None else found), "this machine"


def _largest_size_that_fits(n, size, method, batch_size, storage_bytes, room) -> int | None:
    """The largest model size below `size`, a multiple of 16 as people choose them, that fits."""
    for smaller in range((size - 1) // 16 * 16, SMALLEST_SIZE - 1, -16):
        if estimate(n, smaller, method, batch_size, storage_bytes).total <= room:
            return smaller
    return None


def check_fits(
    n: int,
    size: int,
    method: str | None,
    batch_size: int,
    device=None,
    storage_bytes: int = 4,
    box: int | None = None,
) -> Estimate:
    """Raise NotEnoughMemory with one line (the need, what there is, what to try) when a run of
    n particles at model size `size` would not fit; return the estimate when it does. When only
    the pose methods' full-size averages do not fit, the estimate comes back without them
    (full_size 0) and the run goes without them."""
    need = estimate(n, size, method, batch_size, storage_bytes, box)
    room, holder = available_bytes(device)
    if need.total <= room:
        return need
    if need.total - need.full_size <= room:
        return replace(need, full_size=0)
    tries = []
    if storage_bytes > 2 and estimate(n, size, method, batch_size, 2).total <= room:
        tries.append("--storage float16")
    smaller = _largest_size_that_fits(n, size, method, batch_size, storage_bytes, room)
    if smaller is not None:
        tries.append(f"--size {smaller}")
    advice = " or ".join(tries) if tries else "a subset of the particles or a machine with more memory"
    kind = "available" if holder == "this machine" else "free"
    raise NotEnoughMemory(
        f"{n:,} particles at {size} px need {need.total / GIB:.1f} GiB, {holder} has "
        f"{room / GIB:.1f} GiB {kind}; try {advice}"
    )
