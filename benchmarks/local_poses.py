"""The final averages with and without local pose refinement (development seeds).

    PYTHONPATH=. python benchmarks/local_poses.py ring10-pink-junk 1001 [1002 ...]

Runs `--method pose` (the bench's parameters) once on each family stack, then makes the last
round's averages again from its final state twice: at the best poses of the search grid (as
earlier rounds make them) and at the locally refined poses (worker.engine.local_poses, as the
last round makes them), and prints the bench's view correlation of each, per view and averaged,
with the seconds each took.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from worker.engine import bench_families as families
from worker.engine.bench_metrics import view_correlations
from worker.engine.bench_suite import run_pipeline_method
from worker.engine.pose import PoseMethod
from worker.engine.simulate import write_simulation

ORIGINAL_AVERAGE = PoseMethod.average


def last_averaging(name: str, seeds: list[int]):
    """For each seed, a `--method pose` run (the bench's parameters) on the family's stack:
    yields (seed, sim, method, images, labels, k, seconds), the method object in its final state and
    the arguments of its last `average` call, which ORIGINAL_AVERAGE(method, images, labels, k)
    repeats."""
    calls = []

    def recorded(self, images, labels, k):
        calls.append((self, images, labels, k))
        return ORIGINAL_AVERAGE(self, images, labels, k)

    PoseMethod.average = recorded
    try:
        k = families.class_count(name)
        for seed in seeds:
            sim = families.simulate_family(name, seed)
            with tempfile.TemporaryDirectory() as tmp:
                star = write_simulation(sim, Path(tmp) / "stack")["star"]
                labels, _, seconds = run_pipeline_method("pose", star, k, "cpu", Path(tmp) / "run")
            method, images, final_labels, k = calls[-1]
            assert np.array_equal(final_labels, labels)
            yield seed, sim, method, images, labels, k, seconds
            calls.clear()
    finally:
        PoseMethod.average = ORIGINAL_AVERAGE


def main(name: str, seeds: list[int]) -> None:
    for seed, sim, method, images, labels, k, seconds in last_averaging(name, seeds):
        for variant, refined in (("grid", False), ("refined", True)):
            method.refined = refined
            started = time.perf_counter()
            averages = ORIGINAL_AVERAGE(method, images, labels, k)
            took = time.perf_counter() - started
            values = view_correlations(sim.views, labels, averages, sim.clean_views)
            print(
                f"{name} {seed} {variant}: view {np.mean(values):.4f}"
                f" ({took:.1f} s of {seconds:.0f} s) {[round(v, 3) for v in values]}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2:]])
