"""The allocator settings (glibc, as on every machine this project runs on): a training step of
the reference network stops faulting fresh pages."""

import json
import subprocess
import sys

from worker.engine.allocator import reuse_freed_memory

STEPS = """
import json, resource, sys, torch
from worker.engine.allocator import reuse_freed_memory
from worker.engine.train import CRITERION, fresh_network

applied = reuse_freed_memory() if sys.argv[1] == "tuned" else None
torch.set_num_threads(1)
first, second = (torch.randn((128, 1, 64, 64)).contiguous(memory_format=torch.channels_last) for _ in range(2))
unlike = (torch.arange(128) % 2).float()
network = fresh_network(64, torch.device("cpu"), 0)
optimiser = torch.optim.Adam(network.parameters(), lr=1e-4, fused=True)

def step():  # train_step's work on fixed pairs: the two branches, the loss, backward, Adam
    optimiser.zero_grad(set_to_none=True)
    CRITERION(*network.forward_pair(first, second), unlike).backward()
    optimiser.step()

for _ in range(3):
    step()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults_per_step": faults}))
"""


def _faults_per_step(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_step_reuses_its_memory_instead_of_faulting_fresh_pages():
    plain = _faults_per_step("plain")
    tuned = _faults_per_step("tuned")
    assert tuned["applied"] is True
    # A step's activations are 16-32 MiB tensors, 4,096-8,192 pages each: by default glibc maps
    # them afresh every step (30,000-80,000 faults a step measured); with the settings they come
    # back from the heap: most steps fault almost no page, though in some processes every step
    # still maps its 64 MiB weight gradient afresh (16,000 faults; blocks above 32 MiB stay
    # glibc's mmap). Five steps of each, summed: measured 0.001-0.34 of the default's faults.
    assert sum(plain["faults_per_step"]) > 5 * 5_000, plain
    assert sum(tuned["faults_per_step"]) < 0.5 * sum(plain["faults_per_step"]), (plain, tuned)


def test_settings_apply_once_per_process():
    first = reuse_freed_memory()
    assert reuse_freed_memory() is first
