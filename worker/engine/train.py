"""One round of the reference method: train a fresh Siamese network, then embed every particle."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np
import torch

from worker.engine.config import ClassifyConfig
from worker.engine.events import Callback, EmbedProgress, EpochDone, LossPoint, ignore
from worker.engine.model import ContrastiveLoss, SiameseNetwork
from worker.engine.pairs import PairSampler

POINTS_PER_EPOCH = 20  # loss points reported per epoch
MAX_SILENCE = 1.0  # seconds; report at least this often so a cancel is heard quickly
EMBED_BATCH = 1024


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked for; the reference precision is plain float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextmanager
def cpu_threads(device: torch.device, threads: int):
    """Run torch's CPU operators on at most `threads` threads inside the block.

    The pose method's network is small (24 px, 32 pairs a step): its operators take microseconds,
    and on a busy 2-core machine every one of them waited at the thread pool's barrier for a
    descheduled thread, making a step 15 times slower than on one thread.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(threads, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fresh_network(size: int, device: torch.device, seed: int) -> SiameseNetwork:
    torch.manual_seed(seed)
    # Channels-last on every device: oneDNN's convolutions and cuDNN's BatchNorm are markedly
    # faster so for these thin layers (an H100 trained the reference network 1.7 times as fast
    # at 128 pairs a step, 2.8 times at 1,024: benchmarks/results/flop-variants-reference-cuda.json).
    return SiameseNetwork(size).to(device, memory_format=torch.channels_last)


CRITERION = ContrastiveLoss(margin=2.0)


def train_step(
    network: SiameseNetwork,
    optimiser: torch.optim.Optimizer,
    images: torch.Tensor,
    sampler: PairSampler,
    batch: int,
    precision: str,
    generator: torch.Generator,
    augment=None,
) -> torch.Tensor:
    """One optimiser step on `batch` sampled pairs; returns the (detached) mean loss."""
    device = images.device
    first, second, unlike = sampler.sample(batch, generator)
    x1, x2 = images[first].float(), images[second].float()  # a float16 stack: per batch
    if augment is not None:
        x2 = augment(x2, generator)
    x1 = x1.contiguous(memory_format=torch.channels_last)
    x2 = x2.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        # As the original, each branch normalises its own batch (see forward_pair).
        out1, out2 = network.forward_pair(x1, x2)
    loss = CRITERION(out1.float(), out2.float(), unlike)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss.detach()


def train_network(
    network: SiameseNetwork,
    images: torch.Tensor,
    sampler: PairSampler,
    config: ClassifyConfig,
    round_index: int,
    generator: torch.Generator,
    on_event: Callback,
    augment=None,
) -> float:
    """Train on `epoch_num` epochs of N pairs; returns the mean loss of the last epoch.

    `augment(images, generator)`, when given, transforms each batch's second images (the
    invariant method uses it); the reference method passes None.
    """
    device = images.device
    n = images.shape[0]
    # The fused kernel updates the 16M weights in one pass instead of a dozen (same algorithm).
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate, fused=True)
    steps = math.ceil(n / config.batch_size)
    report_every = max(1, steps // POINTS_PER_EPOCH)
    network.train()
    epoch_loss = float("nan")
    for epoch in range(1, config.epoch_num + 1):
        started = time.perf_counter()
        running = torch.zeros((), device=device)
        epoch_sum = torch.zeros((), device=device)
        since_report = 0
        last_report = time.perf_counter()
        for step in range(1, steps + 1):
            batch = min(config.batch_size, n - (step - 1) * config.batch_size)
            loss = train_step(
                network, optimiser, images, sampler, batch, config.precision, generator, augment
            )
            detached = loss * batch
            running += detached
            epoch_sum += detached
            since_report += batch
            if step % report_every == 0 or step == steps or time.perf_counter() - last_report > MAX_SILENCE:
                on_event(
                    LossPoint(
                        round=round_index,
                        epoch=epoch,
                        step=(epoch - 1) * steps + step,
                        pairs_done=(epoch - 1) * n + min(n, step * config.batch_size),
                        loss=float(running) / since_report,
                    )
                )
                running.zero_()
                since_report = 0
                last_report = time.perf_counter()
        epoch_loss = float(epoch_sum) / n
        on_event(EpochDone(round_index, epoch, epoch_loss, time.perf_counter() - started))
    return epoch_loss


@torch.inference_mode()
def embed(
    network: SiameseNetwork,
    images: torch.Tensor,
    precision: str,
    on_event: Callback = ignore,
    round_index: int = 0,
) -> np.ndarray:
    """Embed every particle in large batches; returns (N, 20) float32 on the CPU."""
    network.eval()
    parts = []
    n = images.shape[0]
    for start in range(0, n, EMBED_BATCH):
        on_event(EmbedProgress(round_index, start, n))
        batch = images[start : start + EMBED_BATCH].float().contiguous(memory_format=torch.channels_last)
        with autocast(images.device, precision):
            parts.append(network(batch).float().cpu())
    return torch.cat(parts).numpy()


class ReferenceMethod:
    """The original method: uniform/same-cluster pairs, a fresh network each round."""

    name = "reference"

    def train_round(
        self,
        images: torch.Tensor,
        labels: np.ndarray,
        config: ClassifyConfig,
        round_index: int,
        generator: torch.Generator,
        on_event: Callback,
    ) -> tuple[np.ndarray, dict]:
        """Returns the (N, 20) embedding and the round's state (weights, last loss)."""
        network = fresh_network(images.shape[-1], images.device, config.seed + round_index)
        sampler = PairSampler.from_labels(torch.as_tensor(labels, device=images.device))
        loss = train_network(network, images, sampler, config, round_index, generator, on_event)
        embedding = embed(network, images, config.precision, on_event, round_index)
        return embedding, {"network": network, "loss": loss}
