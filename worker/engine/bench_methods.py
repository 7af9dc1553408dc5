"""Accuracy of the classification methods on simulated sets with known views.

    from worker.engine.bench_methods import compare_methods
    report = compare_methods(n=2000, k=4)

On the same simulated stacks it runs PCA+KMeans, the reference method and the invariant method
(initial PCA+KMeans labels, then `rounds` rounds of train/embed + KMeans, as the pipeline does),
and reports ARI/NMI against the true views. For the invariant labels it also reports how well
each class average matches its true noise-free view, for plain means and for aligned averages
(correlation after the best rotation/shift, whole image and view-specific part).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from worker.engine.align import AlignedAverager
from worker.engine.averages import class_means
from worker.engine.cluster import initial_labels, kmeans_labels
from worker.engine.config import ClassifyConfig
from worker.engine.ctf import phase_flip
from worker.engine.methods import get_method
from worker.engine.preprocess import normalise
from worker.engine.quality import view_match
from worker.engine.simulate import simulate

SETS = {
    "easy": dict(snr=1.0, rotate=False, shift=0.0, ctf=False),
    "hard": dict(snr=0.1, rotate=True, shift=3.0, ctf=True),
}


def _scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
    }


def _run_method(name: str, images: torch.Tensor, k: int, config: ClassifyConfig, rounds: int) -> np.ndarray:
    labels = initial_labels(images[:, 0], k, config.seed)
    method = get_method(name)
    generator = torch.Generator()
    for r in range(1, rounds + 1):
        generator.manual_seed(config.seed * 100_003 + r)
        embedding, _ = method.train_round(images, labels, config, r, generator, lambda event: None)
        labels = kmeans_labels(embedding, k, config.seed + r)
    return labels


def _average_match(
    images: torch.Tensor, labels: np.ndarray, truth: np.ndarray, views: np.ndarray, k: int
) -> dict:
    """Mean view match of each class average with the true view most of its members come from."""
    out = {}
    for kind, averages in (
        ("unaligned", class_means(images, labels, k)),
        ("aligned", AlignedAverager().average(images, labels, k)),
    ):
        matches = []
        for c in range(k):
            members = truth[labels == c]
            if len(members):
                matches.append(view_match(averages[c], views[np.bincount(members).argmax()]))
        out[kind] = {key: float(np.mean([m[key] for m in matches])) for key in ("correlation", "anisotropic")}
    return out


def compare_methods(
    n: int = 2000,
    k: int = 4,
    size: int = 64,
    sets: tuple[str, ...] = ("easy", "hard"),
    rounds: int = 2,
    epochs: int = 5,
    seed: int = 0,
    methods: tuple[str, ...] = ("pca", "reference", "invariant"),
    on_progress: Callable[[str], None] | None = None,
) -> dict:
    """ARI/NMI per method and class-average fidelity per simulated set (see module docstring)."""
    config = ClassifyConfig(
        cluster_num=k, epoch_num=epochs, round_num=rounds, size=size, seed=seed, device="cpu"
    )
    report: dict = {
        "n": n,
        "k": k,
        "size": size,
        "rounds": rounds,
        "epochs": epochs,
        "seed": seed,
        "sets": {},
    }
    for set_name in sets:
        params = SETS[set_name]
        sim = simulate(n, k, size, seed=seed, **params)
        raw = sim.images if sim.ctf is None else phase_flip(sim.images, sim.ctf, sim.pixel_size)
        images = normalise(torch.from_numpy(raw))[:, None]
        entry: dict = {"params": params, "methods": {}}
        labels_of = {}
        for name in methods:
            started = time.perf_counter()
            if name == "pca":
                labels = initial_labels(images[:, 0], k, seed)
            else:
                labels = _run_method(name, images, k, config, rounds)
            labels_of[name] = labels
            entry["methods"][name] = {**_scores(sim.views, labels), "seconds": time.perf_counter() - started}
            if on_progress:
                row = entry["methods"][name]
                on_progress(
                    f"{set_name:5s} {name:10s} ARI {row['ari']:.3f} NMI {row['nmi']:.3f} "
                    f"({row['seconds']:.1f} s)"
                )
        best = "invariant" if "invariant" in labels_of else next(iter(labels_of))
        entry["averages"] = {
            "labels": best,
            **_average_match(images, labels_of[best], sim.views, sim.clean_views, k),
        }
        if on_progress:
            a = entry["averages"]
            on_progress(
                f"{set_name:5s} averages ({best} labels): view-specific correlation "
                f"aligned {a['aligned']['anisotropic']:.3f}, "
                f"unaligned {a['unaligned']['anisotropic']:.3f}"
            )
        report["sets"][set_name] = entry
    return report


if __name__ == "__main__":  # python -m worker.engine.bench_methods [N]
    import json
    import sys

    result = compare_methods(n=int(sys.argv[1]) if len(sys.argv) > 1 else 2000, on_progress=print)
    print(json.dumps(result, indent=2))
