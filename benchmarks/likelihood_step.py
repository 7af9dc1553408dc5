"""The last round's likelihood step, iterations against none (development seeds).

    PYTHONPATH=. python benchmarks/likelihood_step.py ring10-pink-junk 1001 pose

Runs the method with default parameters (UMAP off) on a family's simulated stack with the
likelihood step turned off, then starts the EM from the last round's labels (its empty class
included) for 1 to 4 iterations, with and without re-seeding emptied classes, and prints ARI /
NMI against the truth for each. The boxes flagged as empty are put back into the empty class
afterwards; during these iterations any particle may take that class (the adopted step,
pose.refine_labels, keeps it to the flagged boxes).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from worker.engine import bench_families as families
from worker.engine import pipeline
from worker.engine.bench_metrics import partition_scores
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.pose import PoseMethod
from worker.engine.poses import EmState, references_from_labels, run_em
from worker.engine.simulate import write_simulation

VARIANTS = {
    "1": (1, True),
    "2": (2, True),
    "2 no re-seed": (2, False),
    "3 no re-seed": (3, False),
    "4 no re-seed": (4, False),
}


class Capture:
    """The method object of the run and its last round's labels, before the likelihood step."""

    def __init__(self) -> None:
        self.method: PoseMethod | None = None
        self.labels: np.ndarray | None = None
        self.empty_class: int | None = None

    def refine_labels(self, method, labels, k, empty_class, seed, on_iteration=None):
        self.method, self.labels, self.empty_class = method, labels, empty_class
        return labels  # the step is off: the run writes these labels


def from_labels(method: PoseMethod, labels: np.ndarray, k: int, iterations: int, reseed: bool, seed: int):
    small, ctfs = method._small, method._ctfs
    state = EmState(
        method.state.references, method.state.sigma2, method.state.log_prior, method.state.posterior
    )
    state.references = references_from_labels(small, ctfs, labels, k, state)
    counts = np.bincount(labels, minlength=k).clip(min=1)
    state.log_prior = torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32))
    state.posterior = None
    state = run_em(small, ctfs, k, iterations, seed, state=state, coarse_iterations=0, reseed=reseed)
    return state.posterior.classes[:, 0].cpu().numpy()


def main(family: str, seed: int, method: str) -> None:
    sim = families.simulate_family(family, seed)
    folder = Path(tempfile.mkdtemp())
    paths = write_simulation(sim, folder / "data")
    k = families.class_count(family)
    config = ClassifyConfig(method=method, cluster_num=k, device="cpu", umap=False)
    capture = Capture()
    PoseMethod.refine_labels = lambda self, *args, **kwargs: capture.refine_labels(self, *args, **kwargs)
    with ParticleStack.open(paths["star"]) as stack:
        pipeline.classify(stack, config, folder / "out")
    scores = {"none": partition_scores(sim.views, capture.labels)}
    for name, (iterations, reseed) in VARIANTS.items():
        labels = from_labels(capture.method, capture.labels, k, iterations, reseed, config.seed)
        if capture.empty_class is not None:
            labels[capture.method.empty_rows()] = capture.empty_class
        scores[name] = partition_scores(sim.views, labels)
    print(
        f"{family} {seed} {method}: "
        + "; ".join(f"{name} {s['ari']:.3f} / {s['nmi']:.3f}" for name, s in scores.items())
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
