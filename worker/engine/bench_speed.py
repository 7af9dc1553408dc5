"""Speed and memory measurements for `cryoclust bench`.

Each measurement runs in a child process (`python -m worker.engine.bench_speed ...`), so its
peak memory is its own and nothing one run caches helps the next.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


class AnonymousPeak:
    """Samples the process's anonymous (non-file) resident memory; the file pages of a
    memory-mapped stack are page cache the kernel can drop, so both figures are reported."""

    def __init__(self, interval: float = 0.05) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _read(self) -> int:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            time.sleep(interval)

    def __enter__(self) -> AnonymousPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_engine(
    stack_path: str, k: int, epochs: int, size: int, device: str, precision: str, seed: int = 0
) -> dict:
    """One round of the engine: preprocess, initial labels, train, embed, KMeans, averages."""
    import torch

    from worker.engine.averages import class_means
    from worker.engine.cluster import initial_labels, kmeans_labels
    from worker.engine.config import ClassifyConfig
    from worker.engine.devices import resolve_device
    from worker.engine.events import ignore
    from worker.engine.io.particles import ParticleStack
    from worker.engine.pairs import PairSampler
    from worker.engine.preprocess import preprocess
    from worker.engine.train import embed, fresh_network, train_network

    dev, _ = resolve_device(device)
    config = ClassifyConfig(
        cluster_num=k, epoch_num=epochs, size=size, seed=seed, device=str(dev), precision=precision
    )
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with AnonymousPeak() as anon:
        t0 = time.perf_counter()
        with ParticleStack.open(stack_path) as stack:
            images = preprocess(stack, size, dev)
        sync()
        t1 = time.perf_counter()
        labels = initial_labels(images[:, 0], k, seed)
        t2 = time.perf_counter()
        network = fresh_network(images.shape[-1], dev, seed)
        sampler = PairSampler.from_labels(torch.as_tensor(labels, device=dev))
        generator = torch.Generator(device=dev).manual_seed(seed)
        train_network(network, images, sampler, config, 1, generator, ignore)
        sync()
        t3 = time.perf_counter()
        embedding = embed(network, images, precision)
        t4 = time.perf_counter()
        labels = kmeans_labels(embedding, k, seed)
        t5 = time.perf_counter()
        class_means(images, labels, k)
        sync()
        t6 = time.perf_counter()
    n = images.shape[0]
    return {
        "pipeline": "engine",
        "device": str(dev),
        "precision": precision,
        "n": n,
        "epochs": epochs,
        "preprocess_seconds": t1 - t0,
        "initial_labels_seconds": t2 - t1,
        "train_seconds": t3 - t2,
        "embed_seconds": t4 - t3,
        "kmeans_seconds": t5 - t4,
        "averages_seconds": t6 - t5,
        "round_seconds": t6 - t2,
        "pairs_per_second": epochs * n / (t3 - t2),
        "embed_per_second": n / (t4 - t3),
        "preprocessed_bytes": images.numel() * images.element_size(),
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_anonymous_bytes": anon.peak,
        "gpu_peak_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None,
    }


def measure_naive(stack_path: str, k: int, epochs: int, size: int, workdir: str, seed: int = 0) -> dict:
    """The same round through the naive pipeline (files written before the clock starts)."""
    from worker.engine.bench_naive import run_naive_round, write_image_files
    from worker.engine.cluster import initial_labels, kmeans_labels
    from worker.engine.io.particles import ParticleStack

    with ParticleStack.open(stack_path) as stack:
        raw = stack.read()
    paths = write_image_files(raw, Path(workdir) / "images")
    step = max(1, raw.shape[-1] // size)  # labels only seed the pairs; a coarse grid will do
    labels = initial_labels(raw[:, ::step, ::step], k, seed)
    with AnonymousPeak() as anon:
        t0 = time.perf_counter()
        result = run_naive_round(paths, labels, size, epochs, 128, 5e-4, seed)
        t1 = time.perf_counter()
        kmeans_labels(result["embedding"], k, seed)
        t2 = time.perf_counter()
    n = len(paths)
    return {
        "pipeline": "naive",
        "device": "cpu",
        "n": n,
        "epochs": epochs,
        "train_seconds": result["train_seconds"],
        "embed_seconds": result["embed_seconds"],
        "kmeans_seconds": t2 - t1,
        "round_seconds": t2 - t0,
        "pairs_per_second": result["pairs"] / result["train_seconds"],
        "embed_per_second": n / result["embed_seconds"],
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_anonymous_bytes": anon.peak,
    }


def run_child(kind: str, **kwargs) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    argv = [sys.executable, "-m", "worker.engine.bench_speed", kind]
    for key, value in kwargs.items():
        argv += [f"--{key}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("engine", "naive"))
    parser.add_argument("--stack", required=True)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--workdir", default=".")
    args = parser.parse_args()
    if args.kind == "engine":
        result = measure_engine(args.stack, args.k, args.epochs, args.size, args.device, args.precision)
    else:
        result = measure_naive(args.stack, args.k, args.epochs, args.size, args.workdir)
    print(json.dumps(result, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


if __name__ == "__main__":
    _child_main()
