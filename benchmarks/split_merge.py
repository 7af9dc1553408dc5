"""Split every class, iterate, merge back: tried as the last round's step and not adopted.

    PYTHONPATH=. python benchmarks/split_merge.py ring10-pink-junk 1002

Runs the default method (UMAP off) on a family's development stack with the likelihood step
turned off, then from the last round's labels compares:
- "refine3": the adopted step (3 EM iterations from the labels);
- "smN": every class of 20 or more particles split in two along its first principal component
  (poses.split_class), N EM iterations with the doubled classes, merged back to K by the
  posterior (merge.merge_groups), as round 1 does from random references;
- "smN+refine3": the same, then the adopted step.
It prints ARI / NMI against the truth for each (the flagged empty boxes put back into the empty
class) and the mean log-likelihood per particle of each refined state (under its own noise
model, so only roughly comparable).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.likelihood_step import Capture
from worker.engine import bench_families as families
from worker.engine import pipeline
from worker.engine.bench_metrics import partition_scores
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.merge import merge_groups
from worker.engine.pose import PoseMethod
from worker.engine.poses import EmState, references_from_labels, run_em, split_class
from worker.engine.simulate import write_simulation

SPLIT_MEMBERS = 20


def from_labels(method: PoseMethod, labels: np.ndarray, k: int) -> EmState:
    small, ctfs = method._small, method._ctfs
    s = method.state
    state = EmState(s.references, s.sigma2, s.log_prior, s.posterior)
    state.references = references_from_labels(small, ctfs, labels, k, state)
    counts = np.bincount(labels, minlength=k).clip(min=1)
    state.log_prior = torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32))
    state.posterior = None
    return state


def refine(method: PoseMethod, labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    state = run_em(
        method._small,
        method._ctfs,
        k,
        3,
        seed,
        state=from_labels(method, labels, k),
        coarse_iterations=0,
        reseed=False,
    )
    return state.posterior.classes[:, 0].cpu().numpy(), float(state.posterior.log_likelihood.mean())


def split_and_merge(method: PoseMethod, labels: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    small, ctfs = method._small, method._ctfs
    state = run_em(
        small, ctfs, k, 1, seed, state=from_labels(method, labels, k), coarse_iterations=0, reseed=False
    )
    best = state.posterior.classes[:, 0]
    references, log_prior = [], []
    for c in range(k):
        if int((best == c).sum()) >= SPLIT_MEMBERS:
            references += split_class(small, state.posterior, c)
            log_prior += [float(state.log_prior[c]) - float(np.log(2))] * 2
        else:
            references.append(state.references[c])
            log_prior.append(float(state.log_prior[c]))
    split = EmState(torch.stack(references), state.sigma2, torch.tensor(log_prior), None)
    split = run_em(
        small, ctfs, len(references), iterations, seed, state=split, coarse_iterations=0, reseed=False
    )
    chosen = split.posterior.classes[:, 0]
    return merge_groups(split.posterior.class_probs, chosen, k)[chosen.cpu().numpy()]


def main(family: str, seed: int) -> None:
    sim = families.simulate_family(family, seed)
    folder = Path(tempfile.mkdtemp())
    paths = write_simulation(sim, folder / "data")
    k = families.class_count(family)
    config = ClassifyConfig(method="pose", cluster_num=k, device="cpu", umap=False)
    capture = Capture()
    PoseMethod.refine_labels = lambda self, *args, **kwargs: capture.refine_labels(self, *args, **kwargs)
    with ParticleStack.open(paths["star"]) as stack:
        pipeline.classify(stack, config, folder / "out")
    method, labels = capture.method, capture.labels

    def scored(found: np.ndarray) -> dict:
        found = found.copy()
        if capture.empty_class is not None:
            found[method.empty_rows()] = capture.empty_class
        return partition_scores(sim.views, found)

    rows = {"none": (scored(labels), None)}
    refined, likelihood = refine(method, labels, k, config.seed)
    rows["refine3"] = (scored(refined), likelihood)
    for iterations in (2, 4):
        merged = split_and_merge(method, labels, k, iterations, config.seed)
        rows[f"sm{iterations}"] = (scored(merged), None)
        refined, likelihood = refine(method, merged, k, config.seed)
        rows[f"sm{iterations}+refine3"] = (scored(refined), likelihood)
    print(
        f"{family} {seed}: "
        + "; ".join(
            f"{name} {s['ari']:.3f} / {s['nmi']:.3f}" + ("" if ll is None else f" (log-lik {ll:.2f})")
            for name, (s, ll) in rows.items()
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
