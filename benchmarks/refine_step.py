"""The last round's likelihood step at another in-plane angle step (development seeds).

    PYTHONPATH=. python benchmarks/refine_step.py blobs10 5.0 1001 [1002 ...]

Runs `--method pose` (the bench's parameters) once on each family stack with the step of
`refine_labels`' EM iterations set to STEP degrees (poses.FINE_STEP, 7.5 by default; the
rounds before keep theirs), and prints the bench's ARI, NMI and view correlation.
"""

import sys
import tempfile
from pathlib import Path

from worker.engine import bench_families as families
from worker.engine import poses
from worker.engine.bench_metrics import score
from worker.engine.bench_suite import run_pipeline_method
from worker.engine.pose import PoseMethod
from worker.engine.simulate import write_simulation


def main(name: str, step: float, seeds: list[int]) -> None:
    original = PoseMethod.refine_labels

    def at_step(self, *args, **kwargs):
        kept, poses.FINE_STEP = poses.FINE_STEP, step
        try:
            return original(self, *args, **kwargs)
        finally:
            poses.FINE_STEP = kept

    PoseMethod.refine_labels = at_step
    for seed in seeds:
        sim = families.simulate_family(name, seed)
        with tempfile.TemporaryDirectory() as tmp:
            star = write_simulation(sim, Path(tmp) / "stack")["star"]
            k = families.class_count(name)
            labels, averages, seconds = run_pipeline_method("pose", star, k, "cpu", Path(tmp) / "run")
        m = score(sim, labels, averages)
        print(
            f"{name} {seed} step {step}: ARI {m['ari']:.4f} NMI {m['nmi']:.4f}"
            f" views {m['view_correlation']:.4f} ({seconds:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), [int(s) for s in sys.argv[3:]])
