"""RELION Class2D on one family stack, run now on this machine, outside the anchors' cache.

    PYTHONPATH=. python benchmarks/relion_timing.py blobs10 2002 benchmarks/results/relion-blobs10-seed2002-HOST.json

The time bar compares the default method with RELION on the same machine; the cached anchor
times come from whatever machine filled the cache. This runs the anchor's own `run_relion` on
the family's stack (the same command and classes as the cache) and writes its record: wall and
CPU seconds, the load average before and after, the command, its version and the scores.
"""

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from worker.engine import bench_families as families
from worker.engine.bench_metrics import score
from worker.engine.bench_relion import run_relion


def main(family: str, seed: int, out: Path) -> None:
    sim = families.simulate_family(family, seed)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cryoclust-relion-") as folder:
        record, averages = run_relion(sim, families.class_count(family), Path(folder))
    record["load_average"] = [load, os.getloadavg()[0]]
    record["metrics"] = score(sim, np.asarray(record["labels"]), averages)
    record.update(family=family, seed=seed, n=sim.n, machine=platform.machine())
    out.write_text(json.dumps(record, indent=1))
    metrics = record["metrics"]
    print(f"{family} {seed}: {record['seconds']:.1f} s, ARI {metrics['ari']:.3f}, NMI {metrics['nmi']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
