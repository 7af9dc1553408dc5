"""The training step's arithmetic rate against this machine's own matmul rate (`cryoclust bench --flops`).

For a network as a method trains it (the reference network at the model size 64, batch 128, on
torch's threads; the pose method's network at 24 px, batch 32, on one thread, with its re-posed
second images), it
- counts the FLOPs of one training step (both branches forward, the contrastive loss, backward)
  with torch.utils.flop_counter: convolutions and matrix products, as FLOPs are usually counted
  (BatchNorm, ReLU, padding and the Adam update are memory-bound and count as zero);
- times real steps through worker.engine.train.train_network, as a round runs them (same
  precision, memory format, fused Adam, pair sampling, loss reporting and allocator settings);
- times a large torch.mm in the same dtype on the same threads;
and reports GFLOP/s of each and their ratio. With `profile`, torch.profiler's self time and
FLOPs per operator show where a step's time goes.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from worker.engine.allocator import reuse_freed_memory
from worker.engine.config import ClassifyConfig
from worker.engine.events import ignore
from worker.engine.pairs import PairSampler
from worker.engine.train import cpu_threads, fresh_network, train_network, train_step

MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}  # square operands large enough to reach the peak rate
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BAR = 0.5  # the step's GFLOP/s as a share of torch.mm's that the issue asks for


@dataclass(frozen=True)
class NetworkSetup:
    """A network as one method trains it."""

    name: str
    size: int  # px
    batch: int  # pairs per step
    threads: int | None  # CPU threads (None: torch's default)
    augmented: bool  # second images re-posed (the pose method)


def setups() -> dict[str, NetworkSetup]:
    from worker.engine.pose import NETWORK_BATCH, NETWORK_SIZE, NETWORK_THREADS

    reference = ClassifyConfig()
    return {
        "reference": NetworkSetup("reference", 64, reference.batch_size, None, False),
        "pose": NetworkSetup("pose", NETWORK_SIZE, NETWORK_BATCH, NETWORK_THREADS, True),
    }


def _augment(setup: NetworkSetup):
    if not setup.augmented:
        return None
    from worker.engine.pose import _repose

    return _repose


def _stack(n: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, PairSampler]:
    """Normalised noise images and 10 random labels: the step's cost does not depend on content."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn((n, 1, size, size), generator=generator).to(device)
    labels = torch.randint(10, (n,), generator=generator).to(device)
    return images, PairSampler.from_labels(labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(setup: NetworkSetup, device: torch.device, precision: str, batch: int | None = None) -> dict:
    """FLOPs of one training step of `batch` pairs: total, per pair, and per operator."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = batch or setup.batch
    images, sampler = _stack(batch, setup.size, device)
    network = fresh_network(setup.size, device, 0)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-4, fused=True)
    generator = torch.Generator(device=device).manual_seed(0)
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(network, optimiser, images, sampler, batch, precision, generator, _augment(setup))
    per_operator = {str(op): int(count) for op, count in counter.get_flop_counts()["Global"].items()}
    total = counter.get_total_flops()
    return {"flops_per_step": total, "flops_per_pair": total / batch, "per_operator": per_operator}


def time_training(
    setup: NetworkSetup, device: torch.device, precision: str, batch: int, steps: int, repeats: int
) -> list[float]:
    """Seconds per step of `repeats` one-epoch runs of `steps` steps each (after a warm-up)."""
    images, sampler = _stack(batch * steps, setup.size, device)
    config = ClassifyConfig(batch_size=batch, epoch_num=1, precision=precision, device=str(device))
    generator = torch.Generator(device=device).manual_seed(0)
    network = fresh_network(setup.size, device, 0)
    warm = _stack(batch * 3, setup.size, device)
    train_network(network, *warm, config, 1, generator, ignore, augment=_augment(setup))
    seconds = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        train_network(network, images, sampler, config, 1, generator, ignore, augment=_augment(setup))
        _sync(device)
        seconds.append((time.perf_counter() - started) / steps)
    return seconds


def matmul_seconds(
    device: torch.device, precision: str, repeats: int, size: int | None = None
) -> list[float]:
    """Seconds of one (size x size) @ (size x size) product in the precision's dtype."""
    size = size or MATMUL_SIZE[device.type]
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn((size, size), generator=generator).to(device, DTYPES[precision]) for _ in range(2))
    torch.mm(a, b)  # warm-up: library initialisation and buffers
    _sync(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(
    setup: NetworkSetup,
    device: torch.device,
    precision: str,
    batch: int | None = None,
    steps: int = 10,
    repeats: int = 5,
) -> dict:
    """One line of the table: the step's and the matmul's GFLOP/s (medians) and their ratio."""
    batch = batch or setup.batch
    reuse_freed_memory()  # as classify does
    threads = cpu_threads(device, setup.threads) if setup.threads else nullcontext()
    with threads:
        flops = step_flops(setup, device, precision, batch)
        step = time_training(setup, device, precision, batch, steps, repeats)
        mm = matmul_seconds(device, precision, repeats)
        thread_count = torch.get_num_threads()
    size = MATMUL_SIZE[device.type]
    step_rate = flops["flops_per_step"] / statistics.median(step) / 1e9
    mm_rate = 2 * size**3 / statistics.median(mm) / 1e9
    return {
        "network": setup.name,
        "size": setup.size,
        "batch": batch,
        "precision": precision,
        "device": str(device),
        "threads": thread_count if device.type == "cpu" else None,
        "flops_per_pair": flops["flops_per_pair"],
        "flops_per_operator": flops["per_operator"],
        "step_seconds": step,
        "pairs_per_second": batch / statistics.median(step),
        "step_gflops": step_rate,
        "matmul_size": size,
        "matmul_seconds": mm,
        "matmul_gflops": mm_rate,
        "ratio": step_rate / mm_rate,
        "bar_met": step_rate / mm_rate >= BAR,
        "load_average": list(os.getloadavg()),
    }


def operator_profile(
    setup: NetworkSetup,
    device: torch.device,
    precision: str,
    batch: int | None = None,
    steps: int = 5,
    top: int = 12,
) -> list[dict]:
    """The step's operators by self time over `steps` steps (after a warm-up), with the FLOPs the
    profiler attributes to them: matrix products only (it gives convolutions none; their count is
    in step_flops's per_operator)."""
    from torch.profiler import ProfilerActivity, profile

    batch = batch or setup.batch
    reuse_freed_memory()
    images, sampler = _stack(batch * 4, setup.size, device)
    network = fresh_network(setup.size, device, 0)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-4, fused=True)
    generator = torch.Generator(device=device).manual_seed(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    threads = cpu_threads(device, setup.threads) if setup.threads else nullcontext()
    with threads:
        for _ in range(2):
            train_step(network, optimiser, images, sampler, batch, precision, generator, _augment(setup))
        with profile(activities=activities, with_flops=True) as prof:
            for _ in range(steps):
                train_step(network, optimiser, images, sampler, batch, precision, generator, _augment(setup))
            _sync(device)
    events = prof.key_averages()
    own = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, own) for e in events) or 1.0
    rows = sorted(events, key=lambda e: getattr(e, own), reverse=True)[:top]
    return [
        {
            "operator": e.key,
            "calls_per_step": e.count / steps,
            "ms_per_step": getattr(e, own) / 1e3 / steps,
            "share": getattr(e, own) / total,
            "gflops_per_step": (e.flops or 0) / 1e9 / steps,
        }
        for e in rows
    ]


def table(rows: list[dict]) -> str:
    lines = [
        "| network | px | batch | precision | threads | MFLOP/pair | pairs/s | step GFLOP/s | matmul GFLOP/s | ratio | bar (50 %) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['size']} | {r['batch']} | {r['precision']} | {r['threads'] or '-'} | "
            f"{r['flops_per_pair'] / 1e6:,.1f} | {r['pairs_per_second']:,.0f} | {r['step_gflops']:,.1f} | "
            f"{r['matmul_gflops']:,.0f} | {r['ratio']:.0%} | {'met' if r['bar_met'] else 'not met'} |"
        )
    return "\n".join(lines)
