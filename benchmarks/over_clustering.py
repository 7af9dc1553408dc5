"""Round 1's over-clustering on and off, for the default method, on development seeds.

    PYTHONPATH=. python benchmarks/over_clustering.py [FAMILIES] [SEEDS] [FACTORS]
    PYTHONPATH=. python benchmarks/over_clustering.py blobs10,ring10-pink-junk 1001,1002 1,2

Each family's stack (worker.engine.bench_families, development seeds only) is classified with
pose-em's defaults, once for each over-clustering factor (1: the EM with exactly the classes
asked for). Prints one JSON line per run: ARI, the class averages' view correlation, the share
of junk caught and the CPU seconds.
"""

import json
import sys
import tempfile
import time

import mrcfile

import worker.engine.pose as pose
from worker.engine.bench_families import DEVELOPMENT_SEEDS, class_count, simulate_family
from worker.engine.bench_metrics import score
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.pipeline import classify
from worker.engine.simulate import write_simulation


def main(argv: list[str]) -> None:
    families = (argv[0] if argv else "blobs10,ring10-pink-junk,blobs10-lowsnr-pink").split(",")
    seeds = [int(s) for s in (argv[1] if len(argv) > 1 else "1001,1002").split(",")]
    factors = [float(f) for f in (argv[2] if len(argv) > 2 else "1,2").split(",")]
    if not set(seeds) <= set(DEVELOPMENT_SEEDS):
        raise SystemExit(f"development seeds only ({DEVELOPMENT_SEEDS}); the held-out ones judge")
    for family in families:
        for seed in seeds:
            sim = simulate_family(family, seed)
            folder = tempfile.mkdtemp()
            star = write_simulation(sim, folder)["star"]
            for factor in factors:
                pose.OVER_CLUSTERING = factor
                config = ClassifyConfig(
                    cluster_num=class_count(family), method="pose-em", device="cpu", seed=0, umap=False
                )
                started = time.process_time()
                with ParticleStack.open(star) as stack:
                    result = classify(stack, config, f"{folder}/out-{factor}")
                seconds = time.process_time() - started
                averages = mrcfile.read(f"{folder}/out-{factor}/class_averages.mrcs")
                scores = score(sim, result.labels, averages)
                row = {
                    "family": family,
                    "seed": seed,
                    "over_clustering": factor,
                    "ari": round(scores["ari"], 3),
                    "views": round(scores["view_correlation"], 3),
                    "junk_caught": scores.get("junk_caught"),
                    "cpu_seconds": round(seconds),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
