"""RELION 3.1 Class2D on a simulated stack, as a benchmark anchor (never a run-time dependency).

Install it with `make bench-setup` (Debian's `relion` package: relion_refine, relion_refine_mpi,
...). The stack is written as RELION expects it (each image normalised so that its background,
outside the particle diameter, has mean 0 and std 1, as relion_preprocess does) with a RELION
3.1 particles.star (optics group, pixel size, per-particle defocus); the run is the usual
Class2D job:

    relion_refine --i particles.star --o class2d/run --K k [--ctf] --iter 25 --psi_step 12
        --offset_range 5 --particle_diameter D --zero_mask --tau2_fudge 2
        --dont_combine_weights_via_disc --pool 30 --j 2 --random_seed 0

The offset step is relion_refine's own default, as in the command the anchor was first measured
with (`--offset_step 1` made the first iteration take 9 min for 2,000 particles on 2 cores).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from worker.engine.config import DEFAULT_MASK_FRACTION

ITERATIONS = 25
THREADS = 2
# Of the box: the molecules fit within 0.8 box, plus the shifts. The same share as the pose
# methods' own mask on their averages, so both tools mask alike.
DIAMETER_FRACTION = DEFAULT_MASK_FRACTION
BINARY = "relion_refine"
OUTPUT = "class2d"  # relion_refine wants --o inside an existing folder


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def particle_diameter(box: int, pixel_size: float) -> float:
    return round(DIAMETER_FRACTION * box * pixel_size)


def normalise_background(images: np.ndarray, radius: float) -> np.ndarray:
    """Each image minus its background mean, over its background std (background: r > radius)."""
    box = images.shape[-1]
    coords = np.arange(box) - box // 2
    outside = (coords[:, None] ** 2 + coords[None, :] ** 2) > radius**2
    out = np.empty_like(images, dtype=np.float32)
    for start in range(0, len(images), 1024):
        part = images[start : start + 1024].astype(np.float64)
        background = part[:, outside]
        mean = background.mean(axis=1)[:, None, None]
        std = np.maximum(background.std(axis=1), 1e-12)[:, None, None]
        out[start : start + 1024] = (part - mean) / std
    return out


def write_relion_inputs(sim, folder: Path, diameter: float) -> Path:
    """particles.mrcs and particles.star in folder; returns the star file."""
    from worker.engine.ctf import CtfParams
    from worker.engine.io.mrc import write_stack
    from worker.engine.io.star import write_particles_star

    folder.mkdir(parents=True, exist_ok=True)
    box = sim.images.shape[-1]
    images = normalise_background(sim.images, diameter / 2 / sim.pixel_size)
    write_stack(folder / "particles.mrcs", images, sim.pixel_size)
    names = [f"{i + 1:06d}@particles.mrcs" for i in range(sim.n)]
    # RELION 3.1 needs voltage and Cs in the optics table even without --ctf; a stack without
    # a CTF gets the simulator's optics and a nominal defocus, which RELION then ignores.
    ctf = sim.ctf if sim.ctf is not None else CtfParams.uniform(np.full(sim.n, 10000.0))
    return write_particles_star(
        folder / "particles.star", names, None, sim.pixel_size, ctf=ctf, image_size=box
    )


def relion_command(
    k: int, diameter: float, ctf: bool, iterations: int = ITERATIONS, threads: int = THREADS
) -> list[str]:
    command = [BINARY, "--i", "particles.star", "--o", f"{OUTPUT}/run", "--K", str(k)]
    if ctf:
        command.append("--ctf")
    command += [
        "--iter",
        str(iterations),
        "--psi_step",
        "12",
        "--offset_range",
        "5",
        "--particle_diameter",
        f"{diameter:g}",
        "--zero_mask",
        "--tau2_fudge",
        "2",
        "--dont_combine_weights_via_disc",
        "--pool",
        "30",
        "--j",
        str(threads),
        "--random_seed",
        "0",
    ]
    return command


def relion_version() -> str:
    if shutil.which(BINARY) is None:
        raise RuntimeError(f"{BINARY} not found: install the anchors with `make bench-setup`")
    text = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=False).stdout
    for line in text.splitlines():
        if "version" in line.lower():
            return line.split(":", 1)[-1].strip()
    return text.strip()


def run_relion(
    sim, k: int, folder: Path, iterations: int = ITERATIONS, threads: int = THREADS
) -> tuple[dict, np.ndarray]:
    """Run Class2D in folder; return (record with labels, seconds, command, version), averages."""
    from worker.engine.io.relion_run import read_class2d

    version = relion_version()
    box = sim.images.shape[-1]
    diameter = particle_diameter(box, sim.pixel_size)
    write_relion_inputs(sim, folder, diameter)
    command = relion_command(k, diameter, sim.ctf is not None, iterations, threads)
    (folder / OUTPUT).mkdir(exist_ok=True)
    started, cpu, load = time.perf_counter(), child_cpu_seconds(), os.getloadavg()[0]
    with open(folder / "relion.log", "w") as log:
        subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - started
    cpu = child_cpu_seconds() - cpu
    result = read_class2d(folder / OUTPUT / "run", iterations, sim.n)
    record = {
        "anchor": "relion",
        "labels": result.labels.tolist(),
        "seconds": seconds,
        "cpu_seconds": cpu,  # the machine may be shared: CPU time says what the run itself cost
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],  # at start and end
        "command": " ".join(command),
        "version": f"RELION {version}",
        "threads": threads,
    }
    return record, result.averages
