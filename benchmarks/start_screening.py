"""Can round 1's starts be told apart early? Fits of each start part-way through its EM.

    PYTHONPATH=. python benchmarks/start_screening.py blobs10 1002

Runs round 1 of the default method's EM (pose._most_likely_first_em, pose.FIRST_STARTS starts)
on a family's development stack, and records for every start its fit (pose.start_fit, the figure
that chooses among the starts) after EM iterations 2, 3 and 4 of the over-clustered
classes, and at the end, with the ARI of its final classes. If the start with the best early fit
is also the one the final fit keeps, the other starts could stop there: each start's coarse
iterations are about half of round 1's EM. Prints one line per stack.
"""

import sys
import tempfile
import time
from pathlib import Path

from worker.engine import bench_families as families
from worker.engine import pipeline, pose
from worker.engine.bench_metrics import partition_scores
from worker.engine.config import ClassifyConfig
from worker.engine.events import ignore
from worker.engine.io.particles import ParticleStack
from worker.engine.simulate import write_simulation

EARLY = (2, 3, 4)  # EM iterations after which each start's fit is recorded


def main(family: str, seed: int) -> None:
    sim = families.simulate_family(family, seed)
    folder = Path(tempfile.mkdtemp())
    paths = write_simulation(sim, folder / "data")
    config = ClassifyConfig(method="pose", cluster_num=families.class_count(family), device="cpu", umap=False)
    with ParticleStack.open(paths["star"]) as stack:
        run = pipeline._start(stack, config, folder / "out", ignore, None, None)
    method = run.method
    method._prepare(run.images)
    small, ctfs, power = method._small, method._ctfs, method._power
    k = config.cluster_num
    early: list[dict[int, float]] = []
    first_em = pose._first_em

    def recorded_em(images, em_ctfs, classes, seed, on_iteration=None, power=None):
        fits: dict[int, float] = {}
        early.append(fits)

        def record(iteration, state):
            if iteration in EARLY and len(state.references) > k:
                fits[iteration] = start_fit(small, ctfs, state, power)
            if on_iteration is not None:
                on_iteration(iteration, state)

        return first_em(images, em_ctfs, classes, seed, record, power)

    finals, aris = [], []
    start_fit = pose.start_fit

    def recorded_fit(images, fit_ctfs, state, noise):
        finals.append(start_fit(images, fit_ctfs, state, noise))
        aris.append(partition_scores(sim.views, state.posterior.labels)["ari"])
        return finals[-1]

    pose._first_em, pose.start_fit = recorded_em, recorded_fit
    started = time.perf_counter()
    try:
        pose._most_likely_first_em(small, ctfs, k, config.seed, power=power)
    finally:
        pose._first_em, pose.start_fit = first_em, start_fit
    kept = max(range(len(finals)), key=finals.__getitem__)
    cells = []
    for i in EARLY:
        at = [fits.get(i, float("nan")) for fits in early]
        chosen = max(range(len(at)), key=at.__getitem__)
        cells.append(
            f"it{i} {' '.join(f'{f:.3f}' for f in at)} -> {chosen}{'' if chosen == kept else ' (differs)'}"
        )
    line = " | ".join(cells)
    final = " ".join(f"{f:.3f}/ARI {a:.3f}" for f, a in zip(finals, aris, strict=True))
    print(
        f"{family} {seed}: {line} || final {final} -> {kept} ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
