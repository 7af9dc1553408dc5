"""float16 against float32 storage of the preprocessed stack: the same run on one simulated
family stack, once with each, compared by ARI with the truth and with each other.

    PYTHONPATH=. python benchmarks/storage_precision.py FAMILY METHOD N ROUNDS [EPOCHS] [SEED]
    PYTHONPATH=. python benchmarks/storage_precision.py blobs10 pose 1000 2
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from worker.engine.bench_families import DEVELOPMENT_SEEDS, class_count, simulate_family
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.pipeline import classify
from worker.engine.simulate import write_simulation


def main(argv: list[str]) -> None:
    family, method, n, rounds = argv[0], argv[1], int(argv[2]), int(argv[3])
    epochs = int(argv[4]) if len(argv) > 4 else 5
    seed = int(argv[5]) if len(argv) > 5 else DEVELOPMENT_SEEDS[0]
    sim = simulate_family(family, seed, n)
    labels = {}
    with tempfile.TemporaryDirectory() as tmp:
        star = write_simulation(sim, Path(tmp) / "stack")["star"]
        for storage in ("float32", "float16"):
            config = ClassifyConfig(
                method=method,
                cluster_num=class_count(family),
                round_num=rounds,
                epoch_num=epochs,
                device="cpu",
                storage=storage,
            )
            started = time.perf_counter()
            with ParticleStack.open(star) as stack:
                labels[storage] = classify(stack, config, Path(tmp) / storage).labels
            seconds = time.perf_counter() - started
            ari = adjusted_rand_score(sim.views, labels[storage])
            print(
                f"{family} seed {seed} n {n} {method} r{rounds} e{epochs} {storage}: ARI {ari:.3f}, {seconds:.0f} s"
            )
    same = adjusted_rand_score(labels["float32"], labels["float16"])
    print(
        f"ARI float16 vs float32 labels: {same:.3f}; identical labels: {np.mean(labels['float32'] == labels['float16']):.3f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
