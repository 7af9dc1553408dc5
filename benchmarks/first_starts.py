"""Where round 1 ends, from three seeds, and the likelihood that chooses among them.

    PYTHONPATH=. python benchmarks/first_starts.py blobs10 1002

Runs one round of the default method (UMAP off) on a family's development stack with run seeds
0, 1 and 2, and prints for each: the mean over the particles of their log-likelihood summed
over every class and pose after round 1's EM, under one noise model for all runs (the
particles' own power spectrum at the search size), the ARI of the EM's classes and the ARI of
the run's final classes. Each run makes one start (pose.FIRST_STARTS = 1): this measurement
chose to make three and keep the most likely.
"""

import sys
import tempfile
from pathlib import Path

from worker.engine import bench_families as families
from worker.engine import pipeline, pose
from worker.engine.bench_metrics import partition_scores
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.likelihood import noise_spectrum
from worker.engine.pose import PoseMethod
from worker.engine.simulate import write_simulation


def main(family: str, seed: int) -> None:
    sim = families.simulate_family(family, seed)
    folder = Path(tempfile.mkdtemp())
    paths = write_simulation(sim, folder / "data")
    k = families.class_count(family)
    seen = {}
    train_round = PoseMethod.train_round

    def measured(self, *args, **kwargs):
        out = train_round(self, *args, **kwargs)
        seen["em"] = self.state.posterior.classes[:, 0].cpu().numpy()
        seen["fit"] = pose.start_fit(self._small, self._ctfs, self.state, noise_spectrum(self._small))
        return out

    PoseMethod.train_round = measured
    pose.FIRST_STARTS = 1  # one start a run, as measured before the starts were adopted
    rows = []
    for run_seed in (0, 1, 2):
        config = ClassifyConfig(
            method="pose", cluster_num=k, device="cpu", umap=False, round_num=1, seed=run_seed
        )
        with ParticleStack.open(paths["star"]) as stack:
            result = pipeline.classify(stack, config, folder / f"out{run_seed}")
        em, final = partition_scores(sim.views, seen["em"]), partition_scores(sim.views, result.labels)
        rows.append(
            f"seed {run_seed}: log-lik {seen['fit']:.3f}, EM ARI {em['ari']:.3f}, final ARI {final['ari']:.3f}"
        )
    print(f"{family} {seed}: " + " | ".join(rows))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
