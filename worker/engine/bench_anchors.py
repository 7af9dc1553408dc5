"""Anchors for the methods benchmark: RELION 3.1 Class2D and ASPIRE RIRClass2D, run on the same
simulated stacks as cryoclust and cached, because RELION takes 10-20 minutes per 2,000-particle
stack on 2 cores.

Each result lives in benchmarks/results/<anchor>/<family>-seed<seed>-n<N>.json (labels, seconds,
the exact command, the anchor's version, the hashes of the simulation's parameters and data, and
the metrics) with the class averages beside it in ...-classes.mrcs. A cached result is reused
only while both hashes still match, so a changed family or simulator reruns the anchor. The
same seed can give a stack that differs in its last bits on another CPU model (the simulator's
floating-point sums round differently); the anchor's result on that stack is kept beside the
first, in <family>-seed<seed>-n<N>-<data hash>.json, so each machine finds its own.

Run the held-out anchors in the background (one stack after another), for example:
    nice -n 5 python -m worker.engine.bench_anchors relion --seeds held-out > relion.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from worker.engine import bench_families as families
from worker.engine.io.atomic import temporary_sibling

RESULTS = Path("benchmarks/results")
WORK = Path("benchmarks/work")  # simulated stacks and the anchors' run folders (not committed)
ANCHORS = ("relion", "aspire")


def cache_paths(anchor: str, key: str, results: Path = RESULTS) -> tuple[Path, Path]:
    folder = results / anchor
    return folder / f"{key}.json", folder / f"{key}-classes.mrcs"


def _variants(anchor: str, key: str, data_hash: str, results: Path) -> list[tuple[Path, Path]]:
    """Where a stack's result may be: under its key, or under its key and data hash."""
    return [cache_paths(anchor, key, results), cache_paths(anchor, f"{key}-{data_hash}", results)]


def load_cached(
    anchor: str, name: str, seed: int, n: int, data_hash: str, results: Path = RESULTS
) -> tuple[dict, np.ndarray] | None:
    """The cached record and class averages, or None when absent or made from other data."""
    from worker.engine.io.particles import ParticleStack

    for record_path, classes_path in _variants(anchor, families.stack_key(name, seed, n), data_hash, results):
        if not (record_path.is_file() and classes_path.is_file()):
            continue
        record = json.loads(record_path.read_text())
        if (
            record.get("params_hash") == families.params_hash(name, seed, n)
            and record.get("data_hash") == data_hash
        ):
            with ParticleStack.open(classes_path) as stack:
                return record, stack.read()
    return None


def save_cached(anchor: str, record: dict, averages: np.ndarray, results: Path = RESULTS) -> Path:
    """Under the stack's key; beside a record of other data under its key and data hash."""
    from worker.engine.io.mrc import write_stack

    key = families.stack_key(record["family"], record["seed"], record["n"])
    plain, hashed = _variants(anchor, key, record["data_hash"], results)
    record_path, classes_path = plain
    if plain[0].is_file() and json.loads(plain[0].read_text()).get("data_hash") != record["data_hash"]:
        record_path, classes_path = hashed
    record_path.parent.mkdir(parents=True, exist_ok=True)
    write_stack(classes_path, averages, record.get("pixel_size", 1.0))
    with temporary_sibling(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return record_path


@contextmanager
def _running(lock: Path):
    """One run per stack at a time: a bench run and a background run must not share a folder."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pid = lock.read_text().strip()
        if pid.isdigit() and _alive(int(pid)):
            raise RuntimeError(f"already running in process {pid} ({lock})") from None
        lock.unlink(missing_ok=True)  # left by a run that died
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(handle, str(os.getpid()).encode())
    os.close(handle)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def anchor_result(
    anchor: str,
    name: str,
    seed: int,
    n: int,
    sim,
    work: Path = WORK,
    results: Path = RESULTS,
    run_missing: bool = True,
    log=print,
) -> tuple[dict, np.ndarray] | None:
    """Cached result of one anchor on one stack; run it (and cache it) when missing."""
    data_hash = families.data_hash(sim)
    cached = load_cached(anchor, name, seed, n, data_hash, results)
    if cached is not None or not run_missing:
        return cached
    if anchor not in ANCHORS:
        raise ValueError(f"unknown anchor {anchor!r}; choose one of {', '.join(ANCHORS)}")
    key = families.stack_key(name, seed, n)
    k = families.class_count(name)
    log(f"{anchor}: running on {key} (K={k}) ...")
    with _running(work / anchor / f"{key}.lock"):
        if anchor == "relion":
            from worker.engine.bench_relion import run_relion

            record, averages = run_relion(sim, k, work / anchor / key)
        else:
            from worker.engine.bench_aspire import run_aspire

            record, averages = run_aspire(sim, k, work / anchor / key)
    record.update(
        family=name,
        seed=seed,
        n=n,
        k=k,
        pixel_size=sim.pixel_size,
        params_hash=families.params_hash(name, seed, n),
        data_hash=data_hash,
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    try:
        from worker.engine.bench_metrics import score

        record["metrics"] = score(sim, np.asarray(record["labels"]), averages)
    except Exception as err:  # noqa: BLE001  keep the hours-long run; every bench run rescores
        log(f"{anchor}: {key}: metrics not computed ({type(err).__name__}: {err})")
    save_cached(anchor, record, averages, results)
    log(f"{anchor}: {key} done in {record['seconds']:.0f} s")
    return record, averages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run and cache an anchor on the benchmark families.")
    parser.add_argument("anchor", choices=ANCHORS)
    parser.add_argument("--seeds", choices=("held-out", "development"), default="held-out")
    parser.add_argument("--families", nargs="+", default=list(families.FAMILIES))
    parser.add_argument("-n", type=int, default=families.DEFAULT_N)
    args = parser.parse_args(argv)
    seeds = families.HELD_OUT_SEEDS if args.seeds == "held-out" else families.DEVELOPMENT_SEEDS
    for seed in seeds:  # every family once before any family twice
        for name in args.families:
            sim = families.simulate_family(name, seed, args.n)
            try:
                anchor_result(
                    args.anchor,
                    name,
                    seed,
                    args.n,
                    sim,
                    log=lambda text: print(time.strftime("%H:%M:%S"), text, flush=True),
                )
            except Exception as err:  # noqa: BLE001  one failed stack must not stop the others
                print(f"{args.anchor}: {name} seed {seed} failed: {type(err).__name__}: {err}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
