"""ASPIRE RIRClass2D on a simulated stack, as a benchmark anchor (never a run-time dependency).

ASPIRE pins its own numpy, so it lives in its own environment (.venv-aspire, made by
`make bench-setup`, or any interpreter named by CRYOCLUST_ASPIRE_PYTHON) and runs in a
subprocess: worker/engine/aspire_child.py says how its nearest-neighbour classes become a
K-class partition and how the class averages are made. The particles it gets are the same ones
PCA+KMeans gets: phase-flipped with the known CTF and normalised per image.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np

from worker.engine.bench_relion import child_cpu_seconds

CHILD = Path(__file__).with_name("aspire_child.py")
DEFAULT_PYTHON = Path(".venv-aspire/bin/python")


def aspire_python() -> Path:
    path = Path(os.environ.get("CRYOCLUST_ASPIRE_PYTHON", DEFAULT_PYTHON))
    if not path.exists():
        raise RuntimeError(f"{path} not found: install the anchors with `make bench-setup`")
    return path.absolute()  # not resolve(): the venv's python is a link to the base one


def aspire_version(python: Path) -> str:
    code = "from importlib.metadata import version; print(version('aspire'))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def flipped_particles(sim) -> np.ndarray:
    """Phase-flipped (when the stack has a CTF), per-image normalised particles, float32."""
    import torch

    from worker.engine.ctf import phase_flip
    from worker.engine.preprocess import normalise

    images = sim.images if sim.ctf is None else phase_flip(sim.images, sim.ctf, sim.pixel_size)
    return normalise(torch.from_numpy(np.asarray(images, dtype=np.float32))).numpy()


def run_aspire(sim, k: int, folder: Path) -> tuple[dict, np.ndarray]:
    """Run the child in folder; return (record with labels, seconds, command, version), averages."""
    python = aspire_python()
    folder = folder.absolute()  # the child runs inside folder
    folder.mkdir(parents=True, exist_ok=True)
    particles = folder / "particles.npy"
    np.save(particles, flipped_particles(sim))
    command = [
        str(python),
        str(CHILD.resolve()),
        str(particles),
        str(k),
        f"{sim.pixel_size:g}",
        str(folder / "result"),
    ]
    started, cpu, load = time.perf_counter(), child_cpu_seconds(), os.getloadavg()[0]
    with open(folder / "aspire.log", "w") as log:  # ASPIRE writes its logs/ into the cwd
        subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - started
    cpu = child_cpu_seconds() - cpu
    labels = np.load(folder / "result" / "labels.npy")
    averages = np.load(folder / "result" / "averages.npy")
    record = {
        "anchor": "aspire",
        "labels": labels.astype(int).tolist(),
        "seconds": seconds,
        "cpu_seconds": cpu,  # the machine may be shared: CPU time says what the run itself cost
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],  # at start and end
        "command": " ".join(
            [Path(python).name, "aspire_child.py", "particles.npy", str(k), f"{sim.pixel_size:g}", "result"]
        ),
        "version": f"ASPIRE {aspire_version(python)} (RIRClass2D neighbour graph cut by "
        "spectral clustering, BFSRAverager2D averages)",
    }
    return record, averages
