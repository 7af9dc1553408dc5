"""Round 1 from more random starts: does the likelihood keep choosing the best one?

    PYTHONPATH=. python benchmarks/more_starts.py blobs10 1002 [STARTS]

Runs one round of the default method (UMAP off) on a family's development stack with STARTS
starts (default 6) instead of pose.FIRST_STARTS, and prints for every start its fit (the figure
that chooses among them, pose.start_fit) and the ARI of its EM classes, then which start the
fit chooses among the first 3 and among all, with their ARI. The run's own classes follow the
choice among all.
"""

import sys
import tempfile
from pathlib import Path

from worker.engine import bench_families as families
from worker.engine import pipeline, pose
from worker.engine.bench_metrics import partition_scores
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.simulate import write_simulation


def main(family: str, seed: int, starts: int) -> None:
    sim = families.simulate_family(family, seed)
    folder = Path(tempfile.mkdtemp())
    paths = write_simulation(sim, folder / "data")
    aris, fits = [], []
    first_em, start_fit = pose._first_em, pose.start_fit

    def recorded_em(*args, **kwargs):
        state = first_em(*args, **kwargs)
        aris.append(partition_scores(sim.views, state.posterior.labels)["ari"])
        return state

    def recorded_fit(*args, **kwargs):
        fits.append(start_fit(*args, **kwargs))
        return fits[-1]

    pose._first_em, pose.start_fit, pose.FIRST_STARTS = recorded_em, recorded_fit, starts
    config = ClassifyConfig(
        method="pose", cluster_num=families.class_count(family), device="cpu", umap=False, round_num=1
    )
    with ParticleStack.open(paths["star"]) as stack:
        result = pipeline.classify(stack, config, folder / "out")
    rows = " | ".join(
        f"{i}: fit {f:.3f} ARI {a:.3f}" for i, (f, a) in enumerate(zip(fits, aris, strict=True))
    )
    chosen = {m: max(range(m), key=fits.__getitem__) for m in (3, starts)}
    summary = ", ".join(f"best of {m}: start {i} ARI {aris[i]:.3f}" for m, i in chosen.items())
    final = partition_scores(sim.views, result.labels)["ari"]
    print(f"{family} {seed}: {rows} || {summary}; round's final ARI {final:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 6)
