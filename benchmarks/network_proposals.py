"""Can the Siamese network propose each particle's class without a pose search? (development)

    PYTHONPATH=. python benchmarks/network_proposals.py blobs10 1001 24000 32 10 64

Simulates N particles of a benchmark family (a development seed), phase-flips them, crops them
to SIZE px and masks them; trains the reference network on the first half with contrastive
pairs from the *true* classes (an upper bound for pairs from EM labels), both images of every
pair turned by a random angle and moved up to 1.5 px (64-px scale), for EPOCHS epochs of BATCH
pairs; embeds the second half and reports how often the true class is among the P nearest class
centres (centres from the first half), the ARI of the nearest one, and the seconds.
"""

import sys
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from worker.engine import bench_families as families
from worker.engine.align import soft_mask, transform
from worker.engine.ctf import phase_flip
from worker.engine.pairs import PairSampler
from worker.engine.preprocess import fourier_crop, normalise
from worker.engine.simulate import simulate
from worker.engine.train import CRITERION, fresh_network


def main(family: str, seed: int, n: int, size: int, epochs: int, batch: int) -> None:
    torch.set_num_threads(1)
    sim = simulate(n=n, seed=seed, **families.family_params(family))
    flipped = phase_flip(sim.images, sim.ctf, sim.pixel_size)
    mask = soft_mask(size, size * 0.45)
    images = (normalise(fourier_crop(normalise(torch.from_numpy(flipped.astype(np.float32))), size)) * mask)[
        :, None
    ]
    labels = torch.as_tensor(sim.views)
    labels[labels < 0] = labels.max() + 1  # junk: a class of its own
    half = n // 2
    generator = torch.Generator().manual_seed(0)

    def turned(batch_images: torch.Tensor) -> torch.Tensor:
        angles = torch.rand(len(batch_images), generator=generator) * 360
        shifts = (torch.rand((len(batch_images), 2), generator=generator) * 2 - 1) * 1.5 * size / 64
        moved = transform(batch_images[:, 0], angles, shifts)[:, None] * mask
        return moved.contiguous(memory_format=torch.channels_last)

    network = fresh_network(size, torch.device("cpu"), 0)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-4, fused=True)
    sampler = PairSampler.from_labels(labels[:half])
    started = time.perf_counter()
    for _ in range(epochs * half // batch):
        first, second, unlike = sampler.sample(batch, generator)
        out1, out2 = network.forward_pair(turned(images[first]), turned(images[second]))
        optimiser.zero_grad(set_to_none=True)
        CRITERION(out1, out2, unlike).backward()
        optimiser.step()
    train_seconds = time.perf_counter() - started
    network.eval()
    started = time.perf_counter()
    with torch.no_grad():
        chunks = [
            images[i : i + 2048].contiguous(memory_format=torch.channels_last) for i in range(0, n, 2048)
        ]
        embedding = torch.cat([network(chunk) for chunk in chunks])
    embed_rate = n / (time.perf_counter() - started)
    k = int(labels.max()) + 1
    centres = torch.stack([embedding[:half][labels[:half] == c].mean(0) for c in range(k)])
    order = torch.cdist(embedding[half:], centres).argsort(1)
    truth = labels[half:]
    for p in range(1, 6):
        recall = float((order[:, :p] == truth[:, None]).any(1).float().mean())
        print(f"true class among the {p} nearest centres: {recall:.3f}")
    print(
        f"nearest centre ARI {adjusted_rand_score(truth, order[:, 0]):.3f}; training {train_seconds:.0f} s; "
        f"embedding {embed_rate:,.0f} particles/s"
    )


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]))
