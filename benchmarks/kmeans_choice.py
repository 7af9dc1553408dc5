"""Which KMeans for the initial labels and each round's embeddings: scikit-learn's KMeans
(n_init=10, what the engine used), MiniBatchKMeans, and the engine's torch KMeans
(worker/engine/kmeans.py, one thread; also on torch's default threads), k = 50.

Data with known classes: a mixture of 50 Gaussians in 20 dimensions (unequal weights,
overlapping), and the first 20 PCA features of a simulated stack of 50 views (box 32, SNR 0.1).
Each run is a fresh process, so one library's thread pool does not meet another's. Besides the
seconds, the inertia (sum of squared distances to the class means, in float64, the same for
every method) and the ARI with the true classes, it times a small torch training step (the pose
method's network, 24 px, 32 pairs, one thread, as the method trains it) before the KMeans and
after it in the same process: scikit-learn's OpenMP threads and torch's compete for the cores.

    PYTHONPATH=. python benchmarks/kmeans_choice.py                     # 12 minutes on the busy 2-core CPU
    PYTHONPATH=. python benchmarks/kmeans_choice.py --n 100000 --data mixture --methods torch sklearn

Results go to benchmarks/results/kmeans-choice.json, and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
K = 50
DIM = 20
METHODS = ("sklearn", "minibatch", "torch", "torch-threads")


def _mixture(n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (K, DIM))
    truth = rng.choice(K, n, p=rng.dirichlet(np.full(K, 2.0)))
    return (centres[truth] + rng.normal(0.0, 0.35, (n, DIM))).astype(np.float32), truth


def _pca_features(n: int, seed: int):
    import torch

    from worker.engine.cluster import pca_features
    from worker.engine.preprocess import normalise
    from worker.engine.simulate import simulate

    sim = simulate(n=n, k=K, box=32, snr=0.1, seed=seed)
    images = normalise(torch.from_numpy(sim.images))
    return pca_features(images, seed, DIM), sim.views


def _step_timer():
    """Milliseconds of training steps of the pose method's small network, on `threads` threads."""
    import torch

    from worker.engine.model import ContrastiveLoss
    from worker.engine.train import cpu_threads, fresh_network

    device = torch.device("cpu")
    network = fresh_network(24, device, 0)
    optimiser = torch.optim.Adam(network.parameters(), lr=5e-4)
    criterion = ContrastiveLoss()
    generator = torch.Generator().manual_seed(0)
    x1, x2 = (
        torch.randn(32, 1, 24, 24, generator=generator).contiguous(memory_format=torch.channels_last)
        for _ in range(2)
    )
    unlike = (torch.rand(32, generator=generator) < 0.5).float()

    def steps(count: int, threads: int = 1) -> list[float]:
        times = []
        with cpu_threads(device, threads):
            for _ in range(count):
                started = time.perf_counter()
                loss = criterion(network(x1), network(x2), unlike)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                times.append(1000 * (time.perf_counter() - started))
        return times

    return steps


def _inertia(x, labels) -> float:
    import numpy as np

    x = x.astype(np.float64)
    sums = np.zeros((K, x.shape[1]))
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=K)
    means = sums / np.maximum(counts, 1)[:, None]
    return float(((x - means[labels]) ** 2).sum())


def _cluster(method: str, x, seed: int):
    if method == "sklearn":
        from sklearn.cluster import KMeans

        return KMeans(K, n_init=10, random_state=seed).fit(x).labels_
    if method == "minibatch":
        from sklearn.cluster import MiniBatchKMeans

        return MiniBatchKMeans(K, n_init=3, random_state=seed).fit(x).labels_
    from worker.engine import cluster

    if method == "torch-threads":  # the same KMeans on torch's default thread count
        cluster.KMEANS_THREADS = os.cpu_count() or 1
    return cluster.kmeans_labels(x, K, seed)


def child(data: str, n: int, method: str, seed: int) -> dict:
    """One measurement, in this (fresh) process."""
    from sklearn.metrics import adjusted_rand_score

    x, truth = (_mixture if data == "mixture" else _pca_features)(n, seed)
    steps, threads = _step_timer(), os.cpu_count() or 1
    steps(5)  # warm
    before = statistics.median(steps(20))
    before_threads = statistics.median(steps(20, threads))
    started = time.perf_counter()
    labels = _cluster(method, x, seed)
    seconds = time.perf_counter() - started
    after = steps(20)
    after_threads = steps(20, threads)
    return {
        "data": data,
        "n": n,
        "method": method,
        "seconds": seconds,
        "inertia": _inertia(x, labels),
        "ari": float(adjusted_rand_score(truth, labels)),
        "step_ms_before": before,
        "step_ms_first_after": after[0],
        "step_ms_after": statistics.median(after),
        "threads": threads,  # the same step on every core, as torch's default
        "step_ms_threads_before": before_threads,
        "step_ms_threads_after": statistics.median(after_threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--data", nargs="+", default=["mixture", "pca"], choices=["mixture", "pca"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--pca-max", type=int, default=100_000, help="largest n for the PCA features")
    parser.add_argument(
        "--threads-max",
        type=int,
        default=100_000,
        help="largest n for torch-threads (slow on a busy machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "kmeans-choice.json")
    parser.add_argument("--child", nargs=3, metavar=("DATA", "N", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, n, method = args.child
        print(json.dumps(child(data, int(n), method, args.seed)))
        return
    rows = []
    for data in args.data:
        for n in args.n:
            if data == "pca" and n > args.pca_max:
                continue
            for method in args.methods:
                if method == "torch-threads" and n > args.threads_max:
                    continue
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    data,
                    str(n),
                    method,
                    "--seed",
                    str(args.seed),
                ]
                done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
                rows.append(json.loads(done.stdout.splitlines()[-1]))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"k": K, "dim": DIM, "machine": machine, "runs": rows}, indent=1) + "\n")
    print(
        "| data | N | KMeans | seconds | inertia | ARI | torch step ms, 1 thread: before / first after / after "
        "| all threads: before / after |"
    )
    print("|---|---:|---|---:|---:|---:|---|---|")
    for row in rows:
        print(
            f"| {row['data']} | {row['n']:,} | {row['method']} | {row['seconds']:.1f} | {row['inertia']:.4g} "
            f"| {row['ari']:.3f} | {row['step_ms_before']:.0f} / {row['step_ms_first_after']:.0f} / "
            f"{row['step_ms_after']:.0f} | {row['step_ms_threads_before']:.0f} / {row['step_ms_threads_after']:.0f} |"
        )


if __name__ == "__main__":
    main()
