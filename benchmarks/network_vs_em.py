"""Round by round, the EM's labels against the network's KMeans labels (development seeds).

    PYTHONPATH=. python benchmarks/network_vs_em.py ring10-pink-junk 1001

Runs `--method pose` (default parameters, UMAP off) on a family's simulated stack and, for every
round, prints the ARI against the truth of
- the EM's labels (each particle's most probable class, from the round's method_state.npz);
- the network's labels: KMeans on the round's embedding as the pipeline seeds it (k-means++);
- KMeans on the same embedding started at the centres of the EM's classes,
with the KMeans inertia of the last two, so that a loss of purity can be traced to the
embedding or to KMeans's start. The last round's labels before its empty class are the ones
compared.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from worker.engine import bench_families as families
from worker.engine.cluster import kmeans_labels
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.kmeans import TOLERANCE, _lloyd
from worker.engine.pipeline import classify
from worker.engine.simulate import write_simulation


def inertia(x: torch.Tensor, labels: np.ndarray, k: int) -> float:
    labels_t = torch.as_tensor(labels)
    total = 0.0
    for c in range(k):
        members = x[labels_t == c]
        if len(members):
            total += float(((members - members.mean(0)) ** 2).sum())
    return total


def main(family: str, seed: int) -> None:
    sim = families.simulate_family(family, seed)
    folder = Path(tempfile.mkdtemp())
    paths = write_simulation(sim, folder / "data")
    config = ClassifyConfig(cluster_num=families.class_count(family), device="cpu", umap=False)
    with ParticleStack.open(paths["star"]) as stack:
        classify(stack, config, folder / "out")
    for round_dir in sorted((folder / "out").glob("round_[0-9]*")):
        if not (round_dir / "method_state.npz").is_file():
            continue  # round_00, the initial labels of a job of 0 rounds, has no EM
        r = int(round_dir.name.split("_")[1])
        embedding = np.load(round_dir / "embedding.npy")
        em = np.load(round_dir / "method_state.npz")["classes"][:, 0]
        k = config.cluster_num
        x = torch.as_tensor(embedding).float()
        x = x - x.mean(0)
        network = kmeans_labels(embedding, k, config.seed + r)
        centres = torch.stack(
            [x[torch.as_tensor(em == c)].mean(0) if (em == c).any() else x[0] for c in range(k)]
        )
        from_em, _, _ = _lloyd(x, (x * x).sum(1), centres, TOLERANCE * float(x.var(0).mean()))
        from_em = from_em.numpy()
        print(
            f"{family} {seed} round {r}: ARI EM {adjusted_rand_score(sim.views, em):.3f}, "
            f"network {adjusted_rand_score(sim.views, network):.3f} (inertia {inertia(x, network, k):.0f}), "
            f"network from the EM's centres {adjusted_rand_score(sim.views, from_em):.3f} "
            f"(inertia {inertia(x, from_em, k):.0f})"
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
