"""The last round's likelihood step, iteration by iteration (development seeds).

    PYTHONPATH=. python benchmarks/refine_iterations.py blobs10 1001,1002,1003

Runs the default method (UMAP off) on a family's development stacks. In the last round the
likelihood step runs its first 6 iterations in full, whatever its fit does, and for each one
this prints ARI / NMI against the truth and the fit the step stops on (pose.start_fit over each
particle's pose.PRUNE_CLASSES most probable classes), after the network's own labels
("net"). The step keeps the last iteration before the fit first falls.
"""

import sys
import tempfile
from pathlib import Path

from worker.engine import bench_families as families
from worker.engine import pose
from worker.engine.bench_metrics import partition_scores
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.pipeline import classify
from worker.engine.simulate import write_simulation

ITERATIONS = 6


def main(family: str, seeds: list[int]) -> None:
    truth: dict = {}
    real_fit, real_refine = pose.start_fit, pose.PoseMethod.refine_labels

    def scores(labels) -> str:
        s = partition_scores(truth["views"], labels)
        return f"{s['ari']:.3f}/{s['nmi']:.3f}"

    def recorded_fit(images, ctfs, state, noise, allowed=None):
        fit = real_fit(images, ctfs, state, noise, allowed)
        if truth.get("rows") is None:  # round 1's choice of start, not the step
            return fit
        truth["rows"].append(f"{len(truth['rows']) + 1}:{scores(state.posterior.labels)}/{fit:.3f}")
        return truth["rows_fit"].pop(0) if truth["rows_fit"] else fit

    def refine(self, labels, k, empty_class, seed, on_iteration=None):
        # Rising figures for the step to go on, so every iteration runs; the real ones are printed.
        truth["rows"], truth["rows_fit"] = [], [float(i) for i in range(ITERATIONS)]
        refined = real_refine(self, labels, k, empty_class, seed)
        rows, truth["rows"] = truth["rows"], None
        print(f"{family} {truth['seed']} net {scores(labels)} | " + " ".join(rows), flush=True)
        return refined

    pose.start_fit, pose.PoseMethod.refine_labels = recorded_fit, refine
    pose.REFINE_ITERATIONS = ITERATIONS
    for seed in seeds:
        sim = families.simulate_family(family, seed)
        truth.update(views=sim.views, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            star = write_simulation(sim, Path(tmp) / "data")["star"]
            config = ClassifyConfig(
                cluster_num=families.class_count(family), device="cpu", seed=0, umap=False
            )
            with ParticleStack.open(star) as stack:
                classify(stack, config, Path(tmp) / "out", command=["refine_iterations"])


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")])
