"""Peak memory of preprocessing against the number of particles, for a stack larger than RAM
budgets: the engine reads chunk by chunk into a preallocated (N, 1, S, S) tensor, so memory
should be flat apart from that result.

Writes one box-256 float32 .mrcs of max(--n) particles (6 GB for 24000; filled chunk by chunk,
deleted at the end), then for each N preprocesses the first N particles in a fresh child process
while sampling its anonymous memory (RssAnon in /proc, every 20 ms; file pages of the memory map
are cache, not the process's own). Also reports the child's VmHWM (peak RSS, which does count mapped
file pages; ru_maxrss is not used: Linux carries the parent's over fork and exec) and the size of the (N, 1, 64, 64) result. --chunk-mb runs the largest N again with
another chunk size (the engine's CHUNK_BYTES), to show what bounds the transient memory.

Example:
  .venv/bin/python benchmarks/memory.py                       # N = 3000 ... 24000, box 256
  .venv/bin/python benchmarks/memory.py --n 1000 2000 --box 128 --out /tmp/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
import worker.engine.preprocess as pre
from worker.engine.io.particles import ParticleStack
path, n, chunk_mb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
chunk_bytes = int(chunk_mb * 2**20) if chunk_mb > 0 else pre.CHUNK_BYTES
stack = ParticleStack.open(path)
stack.n = n  # the first n particles of the big file
print("READY", flush=True)
sys.stdin.readline()
started = time.perf_counter()
out = pre.preprocess(stack, 64, "cpu", chunk_bytes=chunk_bytes)
seconds = time.perf_counter() - started
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"shape": list(out.shape), "seconds": seconds, "vm_hwm_mb": hwm / 1024}), flush=True)
"""


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n", type=int, nargs="+", default=[3000, 6000, 12000, 24000], help="particle counts"
    )
    parser.add_argument("--box", type=int, default=256)
    parser.add_argument(
        "--chunk-mb", type=float, nargs="*", default=[256], help="extra chunk sizes for the largest N"
    )
    parser.add_argument("--work-dir", help="where the stack is written (default: a temporary folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory.json"))


def write_big_stack(path: Path, n: int, box: int) -> None:
    """A float32 stack of n noise images, written through a memory map in blocks."""
    block = np.random.default_rng(0).normal(size=(min(n, 512), box, box)).astype(np.float32)
    with mrcfile.new_mmap(path, shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
        mrc.set_image_stack()
        for start in range(0, n, len(block)):
            stop = min(n, start + len(block))
            mrc.data[start:stop] = block[: stop - start] + np.float32(start % 7)
        mrc.voxel_size = 1.0


def rss_anon_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def measure(path: Path, n: int, box: int, chunk_mb: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(n), str(chunk_mb)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdout.readline().strip() == "READY"
    baseline = rss_anon_kb(child.pid)
    child.stdin.write("go\n")
    child.stdin.flush()
    peak = baseline
    while child.poll() is None:
        try:
            peak = max(peak, rss_anon_kb(child.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.02)
    report = json.loads(child.stdout.readline())
    child.wait()
    result_mb = n * 64 * 64 * 4 / 2**20
    return {
        "n": n,
        "file_gb": round(n * box * box * 4 / 2**30, 2),
        "chunk_mb": chunk_mb or 64,
        "seconds": round(report["seconds"], 1),
        "baseline_anon_mb": round(baseline / 1024, 1),
        "peak_anon_mb": round(peak / 1024, 1),
        "result_mb": round(result_mb, 1),
        "peak_minus_result_mb": round((peak - baseline) / 1024 - result_mb, 1),
        "vm_hwm_mb": round(report["vm_hwm_mb"], 1),
    }


def main(args: argparse.Namespace) -> int:
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="cryoclust-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "big.mrcs"
    rows = []
    try:
        started = time.perf_counter()
        write_big_stack(path, max(args.n), args.box)
        print(
            f"memory: wrote {path.stat().st_size / 2**30:.2f} GB in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        runs = [(n, 0.0) for n in sorted(args.n)] + [(max(args.n), c) for c in args.chunk_mb]
        for n, chunk in runs:
            row = measure(path, n, args.box, chunk)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True) if not args.work_dir else path.unlink(missing_ok=True)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "box": args.box,
        "model_size": 64,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"memory: results in {args.out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    sys.exit(main(parser.parse_args()))
