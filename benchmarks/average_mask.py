"""The final class averages with and without their soft circular mask (development seeds).

    PYTHONPATH=. python benchmarks/average_mask.py ring10-pink-junk 1001 [1002 ...]

Runs `--method pose` (the bench's parameters) once on each family stack, then makes the last
round's averages again from its final state: unmasked (a mask wider than the box) and with the
default mask (DEFAULT_MASK_FRACTION of the box, its background level taken off first), and
prints the bench's view correlation of each, per view and averaged.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

from worker.engine import bench_families as families
from worker.engine.bench_metrics import view_correlations
from worker.engine.bench_suite import run_pipeline_method
from worker.engine.pose import PoseMethod
from worker.engine.simulate import write_simulation

WIDER_THAN_ANY_BOX = 1e9  # Å


def main(name: str, seeds: list[int]) -> None:
    calls = []
    original = PoseMethod.average

    def recorded(self, images, labels, k):
        calls.append((self, images, labels, k))
        return original(self, images, labels, k)

    PoseMethod.average = recorded
    k = families.class_count(name)
    for seed in seeds:
        sim = families.simulate_family(name, seed)
        with tempfile.TemporaryDirectory() as tmp:
            star = write_simulation(sim, Path(tmp) / "stack")["star"]
            labels, _, _ = run_pipeline_method("pose", star, k, "cpu", Path(tmp) / "run")
        method, images, final_labels, k = calls[-1]
        assert np.array_equal(final_labels, labels)
        for variant, diameter in (("unmasked", WIDER_THAN_ANY_BOX), ("masked", None)):
            method.mask_diameter = diameter
            averages = original(method, images, labels, k)
            values = view_correlations(sim.views, labels, averages, sim.clean_views)
            print(
                f"{name} {seed} {variant}: view {np.mean(values):.4f} {[round(v, 3) for v in values]}",
                flush=True,
            )
        calls.clear()


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2:]])
