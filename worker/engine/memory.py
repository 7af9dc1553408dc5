"""Will a run fit in memory? Estimated before preprocessing, so that a job too large for the
machine stops at once with one line, instead of meeting the kernel's OOM killer halfway.

The estimate, for N particles at the model size S:

    stored stack      N x S x S values in the storage precision (the preprocessed tensor)
  + working copies    float32 copies of the stack at S that the heaviest stage holds at once
                      (WORKING_COPIES, per method; read off the code, checked by peak RSS)
  + the network       the Siamese network's weights, gradients and Adam moments and a batch's
                      activations (reference method; the pose method's network is small)
  + a fixed allowance Python, torch and the read buffers (FIXED_BYTES)

It is compared with what the machine has: MemAvailable from /proc/meminfo (or psutil
elsewhere), lowered by a cgroup's memory.max when the process runs in one, or the free memory of
the GPU when the stack lives there. The environment variable CRYOCLUST_MEMORY_LIMIT_BYTES sets
that figure by hand (a test, or a machine shared with other work).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from worker.engine.errors import InputError

GIB = 2**30
MEMORY_LIMIT_ENV = "CRYOCLUST_MEMORY_LIMIT_BYTES"
FIXED_BYTES = 1 * GIB  # Python, torch and its thread pools, read buffers (about 0.55 GiB measured)
# Float32 copies of the stack at the model size held at once by each method's heaviest stage.
# reference: class means and half-set FRCs cast the whole stack to float64 (2 copies); the initial
# PCA centres one copy. invariant: the Fourier crops of the whole stack (a complex spectrum, about
# one copy) and the aligned members of a class. pose: the CTFs of every particle at full size,
# computed in float64 at once (about 6 copies, briefly).
WORKING_COPIES = {"reference": 2.0, "invariant": 2.0, "pose": 6.0, "pose-em": 6.0}
ADAM_BYTES_PER_WEIGHT = 16  # weight, gradient and two Adam moments in float32
ACTIVATION_VALUES_PER_PIXEL = 80  # per image and pixel: the conv blocks' outputs kept for backward
SMALLEST_SIZE = 16  # the smallest model size a suggestion goes down to


class NotEnoughMemory(InputError):
    """The run cannot fit in the memory this machine (or GPU) has; the message says what would."""


@dataclass(frozen=True)
class Estimate:
    stored: int  # the preprocessed stack
    working: int  # copies the heaviest stage makes
    network: int
    fixed: int

    @property
    def total(self) -> int:
        return self.stored + self.working + self.network + self.fixed


def estimate(n: int, size: int, method: str, batch_size: int, storage_bytes: int = 4) -> Estimate:
    """The memory a run of n particles at model size `size` needs (see the module docstring)."""
    pixels = size * size
    network = 0
    if method == "reference":
        weights = 8 * pixels * 500 + 500 * 100 + 100 * 20
        network = ADAM_BYTES_PER_WEIGHT * weights + 2 * batch_size * ACTIVATION_VALUES_PER_PIXEL * pixels * 4
    return Estimate(
        stored=n * pixels * storage_bytes,
        working=int(WORKING_COPIES.get(method, 2.0) * n * pixels * 4),
        network=network,
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
    n: int, size: int, method: str, batch_size: int, device=None, storage_bytes: int = 4
) -> Estimate:
    """Raise NotEnoughMemory with one line (the need, what there is, what to try) when a run of
    n particles at model size `size` would not fit; return the estimate when it does."""
    need = estimate(n, size, method, batch_size, storage_bytes)
    room, holder = available_bytes(device)
    if need.total <= room:
        return need
    tries = []
    smaller = _largest_size_that_fits(n, size, method, batch_size, storage_bytes, room)
    if smaller is not None:
        tries.append(f"--size {smaller}")
    advice = " or ".join(tries) if tries else "a subset of the particles or a machine with more memory"
    kind = "available" if holder == "this machine" else "free"
    raise NotEnoughMemory(
        f"{n:,} particles at {size} px need {need.total / GIB:.1f} GiB, {holder} has "
        f"{room / GIB:.1f} GiB {kind}; try {advice}"
    )
