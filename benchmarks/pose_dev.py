"""Development comparison of the classification methods on one simulated set (development seeds).

    python benchmarks/pose_dev.py N K SNR SEED METHOD [ROUNDS]
    python benchmarks/pose_dev.py 2000 10 0.1 1 pose 3

Simulates N particles of K views (uniform in-plane rotation, shifts up to 4 px, CTF with
1.0-2.5 um defocus, 64 px), writes them with their star file, runs `classify` (5 epochs,
ROUNDS rounds) and prints ARI, NMI, the mean view match of the class averages (view-specific
part, after the best rotation and shift), the wall time and the classes' FRC figures.
"""

import json
import sys
import tempfile
import time

import mrcfile
import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.pipeline import classify
from worker.engine.quality import view_match
from worker.engine.simulate import simulate, write_simulation


def main(argv: list[str]) -> None:
    n, k, snr, seed, method = int(argv[0]), int(argv[1]), float(argv[2]), int(argv[3]), argv[4]
    rounds = int(argv[5]) if len(argv) > 5 else 3
    sim = simulate(n=n, k=k, rotate=True, shift=4, ctf=True, snr=snr, seed=seed)
    folder = tempfile.mkdtemp()
    paths = write_simulation(sim, folder)
    config = ClassifyConfig(cluster_num=k, epoch_num=5, round_num=rounds, device="cpu", method=method)
    started = time.perf_counter()
    with ParticleStack.open(paths["star"]) as stack:
        result = classify(stack, config, folder + "/out")
    seconds = time.perf_counter() - started
    averages = mrcfile.read(folder + "/out/class_averages.mrcs")
    labels = result.labels
    matches = []
    for c in range(k):
        members = sim.views[labels == c]
        if len(members):
            view = sim.clean_views[np.bincount(members).argmax()]
            matches.append(view_match(averages[c], view)["anisotropic"])
    classes = json.loads(open(folder + "/out/classes.json").read())
    print(
        f"{method} n={n} k={k} snr={snr} seed={seed}: "
        f"ARI {adjusted_rand_score(sim.views, labels):.3f} NMI {normalized_mutual_info_score(sim.views, labels):.3f} "
        f"view {np.mean(matches):.3f} {seconds:.0f}s per-round {[round(r['seconds']) for r in result.rounds]} "
        f"FRC {[c['quality'] for c in classes]}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
