"""Empty-looking boxes round by round on a family stack (development seeds).

    PYTHONPATH=. python benchmarks/empty_rounds.py blobs10-lowsnr-pink 1001 pose

Runs the method with default parameters (UMAP off) on the family's simulated stack and prints,
for every round, how many boxes scored like empty ones and which class they were given (from
round.json), then the run's ARI and junk scores against the truth.
"""

import json
import sys
import tempfile
from pathlib import Path

from sklearn.metrics import adjusted_rand_score

from worker.engine import bench_families as families
from worker.engine.bench_metrics import junk_scores
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.pipeline import classify
from worker.engine.simulate import write_simulation


def main(family: str, seed: int, method: str) -> None:
    sim = families.simulate_family(family, seed)
    folder = Path(tempfile.mkdtemp())
    paths = write_simulation(sim, folder / "data")
    config = ClassifyConfig(method=method, cluster_num=families.class_count(family), device="cpu", umap=False)
    with ParticleStack.open(paths["star"]) as stack:
        result = classify(stack, config, folder / "out")
    for round_dir in sorted((folder / "out").glob("round_*"))[1:]:  # round_00: the initial labels
        info = json.loads((round_dir / "round.json").read_text())
        print(
            round_dir.name,
            "empty boxes",
            info["empty_boxes"],
            "class",
            info["empty_class"],
            "counts",
            info["counts"],
        )
    ari = adjusted_rand_score(sim.views, result.labels)
    print(f"{family} {seed} {method}: ARI {ari:.3f}", junk_scores(sim.views, result.labels))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
