"""The final class averages with and without their soft circular mask (development seeds).

    PYTHONPATH=. python benchmarks/average_mask.py ring10-pink-junk 1001 [1002 ...]

Runs `--method pose` (the bench's parameters) once on each family stack, then makes the last
round's averages again from its final state: unmasked (a mask wider than the box) and with the
default mask (DEFAULT_MASK_FRACTION of the box, its background level taken off first), and
prints the bench's view correlation of each, per view and averaged.
"""

import sys

import numpy as np

from benchmarks.local_poses import ORIGINAL_AVERAGE, last_averaging
from worker.engine.bench_metrics import view_correlations

WIDER_THAN_ANY_BOX = 1e9  # Å


def main(name: str, seeds: list[int]) -> None:
    for seed, sim, method, images, labels, k, _ in last_averaging(name, seeds):
        for variant, diameter in (("unmasked", WIDER_THAN_ANY_BOX), ("masked", None)):
            method.mask_diameter = diameter
            averages = ORIGINAL_AVERAGE(method, images, labels, k)
            values = view_correlations(sim.views, labels, averages, sim.clean_views)
            print(
                f"{name} {seed} {variant}: view {np.mean(values):.4f} {[round(v, 3) for v in values]}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2:]])
