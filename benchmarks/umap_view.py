"""What the UMAP view costs the worker: worker/engine/cluster.py's umap_2d on N points of a 20-d
embedding (three Gaussian blobs), each size in a fresh process, called twice: the first call
includes numba's compilation, or its loading from numba's on-disk cache where an earlier
process left it there; the second is what every later job of that worker pays. Wall and CPU
seconds; the layout is checked to repeat bitwise for the seed.

Example:
  .venv/bin/python benchmarks/umap_view.py                  # 2,000 and 100,000 points
  .venv/bin/python benchmarks/umap_view.py --sizes 300000
  # a machine's first process (empty cache), then any later one:
  export NUMBA_CACHE_DIR=$(mktemp -d)
  .venv/bin/python benchmarks/umap_view.py --sizes 2000; .venv/bin/python benchmarks/umap_view.py --sizes 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 20


def measure(n: int) -> dict:
    import numpy as np

    from worker.engine.cluster import umap_2d

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, n)
    x = (rng.normal(0, 10, (3, DIM))[truth] + rng.normal(size=(n, DIM))).astype(np.float32)
    calls, layouts = [], []
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        layouts.append(umap_2d(x, 0))
        calls.append(
            {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1)}
        )
    return {
        "n": n,
        "dim": DIM,
        "first": calls[0],
        "again": calls[1],
        "bitwise": bool((layouts[0] == layouts[1]).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 100_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        )
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
