"""Does clustering the particles at their EM poses beat the EM's own labels? (development)

    PYTHONPATH=. python benchmarks/aligned_reclustering.py blobs10 1001 2000

Runs pose-em (one round, UMAP off) on a simulated family stack (a development seed), prints
its ARI and confusion matrix, then clusters the particles at their most probable poses (the
network's input in `--method pose`) by PCA + KMeans, and tries 2-means inside each EM class
(PCA, 5 components): ARI of that split against the truth inside the class, and the two views
that class holds most.
"""

import sys
import tempfile

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, confusion_matrix

from worker.engine import bench_families as families
from worker.engine import methods, pipeline
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.simulate import simulate, write_simulation


def main(family: str, seed: int, n: int) -> None:
    sim = simulate(n=n, seed=seed, **families.family_params(family))
    k = families.class_count(family)
    folder = tempfile.mkdtemp()
    paths = write_simulation(sim, folder)
    used = {}

    def keep_method(name):
        used["method"] = methods.get_method(name)
        return used["method"]

    pipeline.get_method = keep_method  # to read the method's poses after the run
    config = ClassifyConfig(cluster_num=k, round_num=1, device="cpu", method="pose-em", umap=False)
    with ParticleStack.open(paths["star"]) as stack:
        result = pipeline.classify(stack, config, folder + "/out")
    truth = sim.views.copy()
    truth[truth < 0] = sim.k  # junk
    labels = result.labels
    print(f"pose-em ARI {adjusted_rand_score(truth, labels):.3f}")
    np.set_printoptions(linewidth=200)
    print(confusion_matrix(truth, labels))
    aligned = used["method"].aligned_particles()[:, 0].reshape(n, -1).numpy()
    for dims in (10, 20, 40):
        features = PCA(dims, random_state=0).fit_transform(aligned)
        found = KMeans(k, n_init=10, random_state=0).fit_predict(features)
        print(f"aligned particles, PCA {dims} + KMeans: ARI {adjusted_rand_score(truth, found):.3f}")
    for c in np.unique(labels):
        rows = np.nonzero(labels == c)[0]
        features = PCA(5, random_state=0).fit_transform(aligned[rows] - aligned[rows].mean(0))
        split = KMeans(2, n_init=10, random_state=0).fit_predict(features)
        views = np.bincount(truth[rows], minlength=sim.k + 1)
        top = np.argsort(views)[::-1][:2]
        print(
            f"class {c}: {len(rows)} particles, views {top[0]} x{views[top[0]]} and {top[1]} x{views[top[1]]}; "
            f"2-means ARI {adjusted_rand_score(truth[rows], split):.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
