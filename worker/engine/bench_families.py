"""Named families of simulated stacks that judge the classification methods, with two disjoint
seed sets.

Anyone tuning a method uses the DEVELOPMENT_SEEDS only; the reported benchmark
(`cryoclust bench --methods`) uses the HELD_OUT_SEEDS only, so no method is tuned to the stacks
it is judged on. Each family is a dict of `simulate()` arguments; across the set they cover two
molecules, 10 and 30 views with close view pairs (8-12 degrees apart), SNR 0.1 and 0.05, uniform
in-plane rotation, shifts up to 4 px, a CTF with 1.0-2.5 µm defocus, 5 degrees of view jitter,
junk boxes and pink noise; "easy" (4 views, no rotation, no CTF, SNR 1) checks that nothing
breaks on clean data.

Do not change a family once anchors have been run on it: the cached RELION and ASPIRE results
(benchmarks/results/relion, .../aspire) carry a hash of the simulated data and are rerun when it
no longer matches.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from worker.engine.simulate import Simulation, simulate

DEFAULT_N = 2000  # RELION must run on the same stacks: 10-20 min per family at 2,000 on 2 cores
MAX_N = 10_000
DEVELOPMENT_SEEDS = (1001, 1002, 1003)
HELD_OUT_SEEDS = (2001, 2002)

# What every realistic family shares (the set: 64 px at 2 Å, CTF 1.0-2.5 µm defocus).
REALISTIC = dict(
    box=64,
    pixel_size=2.0,
    rotate=True,
    shift=4.0,
    ctf=True,
    defocus_range=(10000.0, 25000.0),
    view_jitter=5.0,
)

FAMILIES: dict[str, dict] = {
    "easy": dict(box=64, pixel_size=2.0, k=4, snr=1.0, rotate=False, shift=0.0, ctf=False),
    "blobs10": dict(REALISTIC, molecule="blobs", k=10, close_pairs=2, snr=0.1),
    "ring10-pink-junk": dict(
        REALISTIC, molecule="ring", k=10, close_pairs=2, snr=0.1, noise="pink", junk=0.1
    ),
    "blobs10-lowsnr-pink": dict(
        REALISTIC, molecule="blobs", k=10, close_pairs=3, snr=0.05, noise="pink", junk=0.05
    ),
    "ring30-junk": dict(REALISTIC, molecule="ring", k=30, close_pairs=5, snr=0.1, junk=0.05),
}
QUICK_FAMILY = "easy"


def family_params(name: str) -> dict:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return dict(FAMILIES[name])


def class_count(name: str) -> int:
    """Classes a method is asked for: the views, plus one for junk when the family has junk."""
    params = FAMILIES[name]
    return params["k"] + (1 if params.get("junk", 0) > 0 else 0)


def simulate_family(name: str, seed: int, n: int = DEFAULT_N) -> Simulation:
    if not 1 <= n <= MAX_N:
        raise ValueError(f"a family stack holds 1 to {MAX_N} particles, got {n}")
    return simulate(n=n, seed=seed, **family_params(name))


def params_hash(name: str, seed: int, n: int) -> str:
    """Hash of what was asked for: the family's arguments, the seed and N."""
    text = json.dumps({"family": family_params(name), "seed": seed, "n": n}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_hash(sim: Simulation) -> str:
    """Hash of what came out: the images and the truth (changes when the simulator does)."""
    digest = hashlib.sha256()
    for array in (sim.images, sim.views, sim.clean_views):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def stack_key(name: str, seed: int, n: int) -> str:
    return f"{name}-seed{seed}-n{n}"
