"""Ways to run the same training step, timed against each other in one process, interleaved.

The step is worker.engine.train.train_step's (pair sampling, the two branches under autocast, the
contrastive loss, backward, fused Adam), with two switches that leave what the network computes
unchanged: the memory format of the images and weights (channels-last or contiguous), whether
the head runs once on both branches (SiameseNetwork.forward_pair) or once per branch, and
whether the forward pass is compiled by torch.compile (Inductor fuses BatchNorm, ReLU and
padding into generated loops; its compilation, 20-40 s, happens before the timing).
Each round times `--steps` steps of every variant in turn, so a busy machine slows them alike;
medians over the rounds are reported, with torch.mm's GFLOP/s on the same threads and the
step's ratio to it (FLOPs counted by worker.engine.bench_flops.step_flops).

    PYTHONPATH=. python benchmarks/flop_variants.py --threads 1 2 --precision fp32 bf16
    PYTHONPATH=. python benchmarks/flop_variants.py --network pose --threads 1
    PYTHONPATH=. python benchmarks/flop_variants.py --device cuda:0 --precision fp32 --batch 128 1024

Results go to benchmarks/results/flop-variants-<network>.json (-cuda.json on a GPU), and a
Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from worker.engine import bench_flops
from worker.engine.allocator import reuse_freed_memory
from worker.engine.model import SiameseNetwork
from worker.engine.train import CRITERION, autocast

VARIANTS = {  # name: (channels_last, paired head, compiled)
    "channels-last, head per branch": (True, False, False),
    "channels-last, paired head": (True, True, False),
    "contiguous, head per branch": (False, False, False),
    "contiguous, paired head": (False, True, False),
    "channels-last, paired head, compiled": (True, True, True),
    "contiguous, paired head, compiled": (False, True, True),
}


def step(
    network, optimiser, images, sampler, batch, precision, generator, augment, channels_last, paired, pair
):
    first, second, unlike = sampler.sample(batch, generator)
    x1, x2 = images[first].float(), images[second].float()
    if augment is not None:
        x2 = augment(x2, generator)
    if channels_last:
        x1 = x1.contiguous(memory_format=torch.channels_last)
        x2 = x2.contiguous(memory_format=torch.channels_last)
    with autocast(images.device, precision):
        out1, out2 = pair(x1, x2) if paired else (network(x1), network(x2))
    loss = CRITERION(out1.float(), out2.float(), unlike)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def compare(setup, precision: str, threads: int, rounds: int, steps: int, device: torch.device) -> dict:
    reuse_freed_memory()  # as classify does
    torch.set_num_threads(threads)
    images, sampler = bench_flops._stack(setup.batch * 8, setup.size, device)
    augment = bench_flops._augment(setup)
    runs = {}
    for name, (channels_last, _, compiled) in VARIANTS.items():
        torch.manual_seed(0)
        network = SiameseNetwork(setup.size).to(device)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        optimiser = torch.optim.Adam(network.parameters(), lr=1e-4, fused=True)
        pair = torch.compile(network.forward_pair) if compiled else network.forward_pair
        runs[name] = (network, optimiser, torch.Generator(device=device).manual_seed(0), pair)
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    mm: list[float] = []
    for _ in range(rounds):
        for name, (channels_last, paired, _) in VARIANTS.items():
            network, optimiser, generator, pair = runs[name]
            run = partial(
                step,
                network,
                optimiser,
                images,
                sampler,
                setup.batch,
                precision,
                generator,
                augment,
                channels_last,
                paired,
                pair,
            )
            run()  # warm: the other variants ran in between
            bench_flops._sync(device)
            started = time.perf_counter()
            for _ in range(steps):
                run()
            bench_flops._sync(device)
            seconds[name].append((time.perf_counter() - started) / steps)
        mm += bench_flops.matmul_seconds(device, precision, 2)
    flops = bench_flops.step_flops(setup, device, precision)["flops_per_step"]
    mm_rate = 2 * bench_flops.MATMUL_SIZE[device.type] ** 3 / statistics.median(mm) / 1e9
    rows = []
    for name, values in seconds.items():
        rate = flops / statistics.median(values) / 1e9
        rows.append(
            {
                "variant": name,
                "precision": precision,
                "threads": threads if device.type == "cpu" else None,
                "device": str(device),
                "batch": setup.batch,
                "step_seconds": values,
                "pairs_per_second": setup.batch / statistics.median(values),
                "step_gflops": rate,
                "matmul_gflops": mm_rate,
                "ratio": rate / mm_rate,
            }
        )
    return {"rows": rows, "load_average": list(os.getloadavg())}


def write(folder: Path, setup, results: list[dict], suffix: str) -> None:
    report = {
        "network": setup.name,
        "size": setup.size,
        "batch": setup.batch,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"flop-variants-{setup.name}{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=("reference", "pose"), default="reference")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="CPU threads (one setting on a GPU)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda:0 (results then go to ...-cuda.json)")
    parser.add_argument("--batch", type=int, nargs="+", help="pairs per step (default the method's own)")
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms for each shape first"
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    own = bench_flops.setups()[args.network]
    threads = args.threads if device.type == "cpu" else args.threads[:1]
    suffix = (
        "" if device.type == "cpu" else f"-{device.type}{'-cudnn-benchmark' if args.cudnn_benchmark else ''}"
    )
    results = []
    print(
        "| batch | threads | precision | variant | pairs/s | step GFLOP/s | matmul GFLOP/s | ratio | load |"
    )
    print("|---:|---:|---|---|---:|---:|---:|---:|---|")
    for batch, count, precision in itertools.product(args.batch or [own.batch], threads, args.precision):
        setup = dataclasses.replace(own, batch=batch)
        part = compare(setup, precision, count, args.rounds, args.steps, device)
        results.append(part)
        write(args.output, own, results, suffix)  # after each part: a long run keeps what it measured
        load = " ".join(f"{v:.1f}" for v in part["load_average"])
        for r in part["rows"]:
            print(
                f"| {batch} | {count} | {precision} | {r['variant']} | {r['pairs_per_second']:,.0f} | "
                f"{r['step_gflops']:,.1f} | {r['matmul_gflops']:,.0f} | {r['ratio']:.0%} | {load} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
