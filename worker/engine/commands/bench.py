"""Measure speed, memory and accuracy on simulated data.

(a) Training throughput (pairs/s), embedding speed and seconds per round of the engine for
several stack sizes on the chosen device; (b) the same round through a naive pipeline built like
the original program (one image file read per __getitem__, rejection sampling, embedding one
particle at a time) and the speed-up; (c) peak memory against N; (d) ARI/NMI against the truth
for the reference method and for PCA+KMeans on an easy simulated set. A round here is
--epochs epochs; a round at the default 20 epochs trains 20 times as many pairs.
Results go to benchmarks/results/ as JSON; a Markdown table is printed.

With --methods it runs the methods benchmark instead (worker.engine.bench_suite): on each
simulated family (worker.engine.bench_families) and held-out seed, every registered method
through the real pipeline, PCA+KMeans, and the anchors RELION 3.1 Class2D and ASPIRE
RIRClass2D (installed by `make bench-setup`; their results are cached in
benchmarks/results/relion and .../aspire and reused). It writes
benchmarks/results/methods-<device>.json and prints family x method: ARI, NMI, class averages
vs true views, junk caught, particles kept and seconds.

With --scale it runs the scale benchmark instead (worker.engine.bench_scale): for each of
--sizes (default 100,000, 300,000 and 1,000,000) a stack of the realistic family (10 views,
rotated, shifted by up to 4 px, CTF, SNR 0.1, 64 px) is simulated (or reused from --workdir),
and `cryoclust classify -r R` runs on it in a child process for each R of --rounds, measuring
its peak resident memory, wall and CPU seconds and the seconds of every stage. It writes
benchmarks/results/scale-<device>.json (merged with the sizes already there) and, when no GPU
was measured, benchmarks/results/scale-gpu-estimate.json: the same stages on an H100 estimated
on paper from their FLOPs and bytes (worker.engine.bench_estimate), marked as an estimate.

With --flops it measures the training step's arithmetic rate instead (worker.engine.bench_flops):
the FLOPs of one step counted by torch.utils.flop_counter, real steps timed as a round runs them,
and a large torch.mm in the same precision on the same threads; for the reference network (64 px,
batch 128) and the pose method's (24 px, batch 32, one thread). It writes
benchmarks/results/flops-<device>.json (with the top operators by time) and prints the ratios.

Example:
    cryoclust bench                          # full run (about 20 minutes on 2 CPU cores)
    cryoclust bench --quick                  # a smoke run in about a minute
    cryoclust bench -g cuda:0 --sizes 2000 10000 50000 --naive-n 10000
    cryoclust bench --methods -g cpu                       # every family, held-out seeds
    cryoclust bench --methods --families blobs10 ring30-junk --methods-only invariant
    cryoclust bench --methods --quick                      # easy family, 300 particles
    cryoclust bench --methods --seeds development -n 1000 --anchors      # for tuning, no anchors
    cryoclust bench --scale -g cpu --sizes 100000 --workdir /data/scale --keep-data
    cryoclust bench --scale -g cpu --sizes 1000000 --rounds 0 --workdir /data/scale
    cryoclust bench --scale --estimate-only                # the GPU estimate alone
    cryoclust bench --flops -g cpu                         # about 5 minutes on the busy 2-core CPU
    cryoclust bench --flops -g cuda:0 --batch 128 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from worker.engine.errors import CommandError
from worker.engine.version import __version__

SPEED_SIZES = (2000, 10000, 50000)
SCALE_SIZES = (100_000, 300_000, 1_000_000)


def _int_list(text: str) -> list[int]:
    """'100000,300000' (or one number) -> [100000, 300000]."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers like 100000,300000") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers like 100000,300000")
    return values


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        type=_int_list,
        nargs="+",
        help="stack sizes N, spaced or comma-separated (default 2000 10000 50000; --scale: "
        "100000,300000,1000000)",
    )
    parser.add_argument(
        "--naive-n", type=int, default=10000, help="N for the naive-pipeline comparison (0 skips it)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs per measured round (default 1)")
    parser.add_argument("--box", type=int, default=64, help="box of the simulated particles (default 64)")
    parser.add_argument("--size", type=int, default=64, help="model size S (default 64)")
    parser.add_argument("-g", "--gpu", default="cuda:0", help="device (default cuda:0, falls back to cpu)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        nargs="+",
        default=["fp32", "bf16"],
        help="precisions to measure",
    )
    parser.add_argument(
        "--accuracy-n", type=int, default=2000, help="particles in the accuracy sets (0 skips them)"
    )
    parser.add_argument(
        "--methods", action="store_true", help="run the methods benchmark on the simulated families instead"
    )
    parser.add_argument(
        "--families", nargs="+", metavar="NAME", help="--methods: families to run (default all)"
    )
    parser.add_argument(
        "--seeds",
        choices=("held-out", "development"),
        default="held-out",
        help="--methods: seed set (default held-out; tune on development)",
    )
    parser.add_argument(
        "--seed-count",
        type=int,
        metavar="N",
        help="--methods: only the first N seeds of the set (default all)",
    )
    parser.add_argument(
        "-n",
        "--num",
        type=int,
        default=2000,
        help="--methods: particles per stack, up to 10000 (default 2000)",
    )
    parser.add_argument(
        "--methods-only",
        nargs="+",
        metavar="NAME",
        help="--methods: run only these methods (registered names or pca-kmeans)",
    )
    parser.add_argument(
        "--anchors",
        nargs="*",
        choices=("relion", "aspire"),
        default=["relion", "aspire"],
        help="--methods: anchors to include (default relion aspire; none for --anchors)",
    )
    parser.add_argument(
        "--cached-anchors",
        action="store_true",
        help="--methods: use cached anchor results only, never start RELION or ASPIRE",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="run the scale benchmark (peak memory, seconds per stage) instead",
    )
    parser.add_argument(
        "--rounds", type=_int_list, default=[0, 1], help="--scale: classify -r values to run (default 0,1)"
    )
    parser.add_argument(
        "--classes", type=int, default=10, help="--scale: classes asked of classify (default 10, the views)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="--scale: folder for the stacks and runs (default: a temporary one)"
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="--scale: keep the stacks and run folders (a later run reuses a matching stack)",
    )
    parser.add_argument(
        "--no-umap",
        action="store_true",
        help="--scale: run classify --no-umap (its stage timings then have no UMAP)",
    )
    parser.add_argument(
        "--estimate-only",
        action="store_true",
        help="--scale: write only the GPU estimate on paper (seconds; nothing is simulated or run)",
    )
    parser.add_argument(
        "--flops", action="store_true", help="measure the training step's GFLOP/s against torch.mm's instead"
    )
    parser.add_argument(
        "--networks",
        nargs="+",
        choices=("reference", "pose"),
        default=["reference", "pose"],
        help="--flops: networks to measure",
    )
    parser.add_argument(
        "--batch", type=int, nargs="+", metavar="B", help="--flops: batch sizes (default each method's own)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="--flops: timed repeats (medians are reported)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        metavar="T",
        help="--flops: CPU threads (default each method's own: torch's default for reference, 1 for pose)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("benchmarks/results"), help="folder for the JSON results"
    )


def _simulated_stack(folder: Path, n: int, box: int, seed: int) -> Path:
    from worker.engine.simulate import simulate, write_simulation

    return write_simulation(simulate(n=n, k=4, box=box, snr=1.0, seed=seed), folder)["particles"]


def accuracy(n: int, epochs: int, rounds: int, device: str, workdir: Path) -> dict:
    """ARI/NMI of the reference method and of PCA+KMeans on an easy set (4 views, SNR 1)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from worker.engine.cluster import initial_labels
    from worker.engine.config import ClassifyConfig
    from worker.engine.io.particles import ParticleStack
    from worker.engine.pipeline import classify
    from worker.engine.preprocess import preprocess
    from worker.engine.simulate import simulate, write_simulation

    sim = simulate(n=n, k=4, box=64, snr=1.0, rotate=False, seed=7)
    paths = write_simulation(sim, workdir / "easy")
    config = ClassifyConfig(cluster_num=4, epoch_num=epochs, round_num=rounds, device=device, seed=0)
    with ParticleStack.open(paths["particles"]) as stack:
        started = time.perf_counter()
        result = classify(stack, config, workdir / "easy_run")
        seconds = time.perf_counter() - started
        baseline = initial_labels(preprocess(stack, 64)[:, 0], 4, 0)
    score = lambda labels: {  # noqa: E731
        "ari": adjusted_rand_score(sim.views, labels),
        "nmi": normalized_mutual_info_score(sim.views, labels),
    }
    return {
        "set": f"easy: N={n}, 4 views, no rotation, SNR 1",
        "reference": {**score(result.labels), "epochs": epochs, "rounds": rounds, "seconds": seconds},
        "pca_kmeans": score(baseline),
    }


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def table(results: dict) -> str:
    lines = [
        "| pipeline | precision | N | pairs/s | embed/s | s/round | peak RSS MiB | peak anon MiB | preprocessed MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["speed"]:
        lines.append(
            f"| {run['pipeline']} | {run.get('precision', 'fp32')} | {run['n']:,} | {run['pairs_per_second']:,.0f} | "
            f"{run['embed_per_second']:,.0f} | {run['round_seconds']:,.1f} | {_mib(run['peak_rss_bytes'])} | "
            f"{_mib(run['peak_anonymous_bytes'])} | {_mib(run.get('preprocessed_bytes'))} |"
        )
    for row in results.get("speedup", []):
        lines.append("")
        lines.append(
            f"Speed-up at N={row['n']:,} ({row['precision']}): training x{row['train']:.1f}, "
            f"embedding x{row['embed']:.1f}, whole round x{row['round']:.1f}"
        )
    if "accuracy" in results:
        acc = results["accuracy"]
        lines.append("")
        lines.append(
            f"Accuracy ({acc['set']}): reference ARI {acc['reference']['ari']:.3f} NMI {acc['reference']['nmi']:.3f} "
            f"({acc['reference']['epochs']} epochs x {acc['reference']['rounds']} rounds); "
            f"PCA+KMeans ARI {acc['pca_kmeans']['ari']:.3f} NMI {acc['pca_kmeans']['nmi']:.3f}"
        )
    return "\n".join(lines)


def methods_main(args: argparse.Namespace, device) -> int:
    from worker.engine import bench_families as families
    from worker.engine.bench_suite import (
        BASELINE,
        markdown_table,
        registered_methods,
        run_suite,
    )

    names = args.families or list(families.FAMILIES)
    seeds = families.HELD_OUT_SEEDS if args.seeds == "held-out" else families.DEVELOPMENT_SEEDS
    if args.seed_count is not None:
        if args.seed_count < 1:
            raise CommandError(f"--seed-count must be at least 1, got {args.seed_count}")
        seeds = seeds[: args.seed_count]
    n, anchors, run_missing = args.num, tuple(args.anchors), not args.cached_anchors
    if args.quick:  # a smoke run: one small family, one seed, cached anchors only
        names, seeds, n, run_missing = [families.QUICK_FAMILY], seeds[:1], 300, False
    for name in names:
        families.family_params(name)  # unknown names fail before anything runs
    methods = args.methods_only  # None: every registered method and the baseline
    known = set(registered_methods()) | {BASELINE}
    if methods and not set(methods) <= known:
        raise SystemExit(f"unknown method(s) {sorted(set(methods) - known)}; choose from {sorted(known)}")
    report = run_suite(
        names,
        list(seeds),
        n=n,
        device=str(device),
        methods=methods,
        anchors=anchors,
        run_missing_anchors=run_missing,
        on_progress=lambda text: print(text, flush=True),
    )
    report["command"] = " ".join(getattr(args, "argv", None) or ["cryoclust", "bench", "--methods"])
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"methods-{device.type}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(markdown_table(report))
    print(f"results written to {path}")
    return 0


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def scale_main(args: argparse.Namespace) -> int:
    """The scale benchmark; this process never imports torch (worker.engine.bench_scale)."""
    from worker.engine import bench_scale as scale

    sizes = [n for group in args.sizes for n in group] if args.sizes else list(SCALE_SIZES)
    if min(sizes) < 2 or min(args.rounds) < 0 or args.classes < 2:
        raise CommandError("--scale needs sizes of at least 2 particles, rounds >= 0 and --classes >= 2")
    family = {**scale.FAMILY, "box": args.box}
    args.output.mkdir(parents=True, exist_ok=True)
    if args.estimate_only:
        return _write_gpu_estimate(args, sizes, family)
    device, notice = scale.resolve_device_in_child(args.gpu)
    if notice:
        print(f"note: {notice}")
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="cryoclust-scale-")) if temporary else args.workdir
    try:
        runs = scale.run_scale(
            sizes,
            args.rounds,
            args.classes,
            device,
            workdir,
            args.keep_data,
            lambda text: print(text, flush=True),
            family,
            ("--no-umap",) if args.no_umap else (),
        )
    finally:
        if temporary and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    header = {
        "version": __version__,
        "device": device,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": _memory_total(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(getattr(args, "argv", None) or ["cryoclust", "bench", "--scale"]),
        "bar": f"peak RSS <= {scale.BAR_FACTOR} x stored stack + {scale.BAR_EXTRA / scale.GIB:.0f} GiB",
        "family": family,
    }
    path = args.output / f"scale-{device.split(':')[0]}.json"
    results = scale.merge_runs(path, header, runs)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(scale.table(results))
    print(f"results written to {path}")
    if device.startswith("cuda"):
        return 0
    return _write_gpu_estimate(args, sizes, family)


def _write_gpu_estimate(args: argparse.Namespace, sizes: list[int], family: dict) -> int:
    """scale-gpu-estimate.json: the same runs on an H100, estimated on paper (no GPU ran)."""
    from worker.engine import bench_scale as scale
    from worker.engine.bench_estimate import assumptions, gpu_estimate

    estimates = [gpu_estimate(n, args.classes, r, box=family["box"]) for n in sizes for r in args.rounds]
    header = {
        "estimate": True,
        "version": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "note": "not measured: no GPU was lent; estimated on paper from FLOPs and bytes "
        "(worker/engine/bench_estimate.py)",
        "assumptions": assumptions(),
        "family": family,
    }
    path = args.output / "scale-gpu-estimate.json"
    results = scale.merge_runs(path, header, estimates)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print("GPU (estimate, not measured):")
    print(scale.estimate_table(results))
    print(f"estimate written to {path}")
    return 0


def flops_main(args: argparse.Namespace, device) -> int:
    from worker.engine import bench_flops

    repeats, steps = (2, 3) if args.quick else (args.repeats, 10)
    rows, profiles = [], {}
    for name in args.networks:
        own = bench_flops.setups()[name]
        for threads in args.threads or [own.threads]:
            setup = replace(own, threads=threads)
            for precision in args.precision:
                for batch in args.batch or [setup.batch]:
                    print(f"{name} {precision} batch {batch} threads {threads or 'default'} ...", flush=True)
                    rows.append(bench_flops.measure(setup, device, precision, batch, steps, repeats))
                key = f"{name}-{precision}" + (f"-{threads}-threads" if args.threads else "")
                profiles[key] = bench_flops.operator_profile(setup, device, precision)
    report = {
        "version": __version__,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(getattr(args, "argv", None) or ["cryoclust", "bench", "--flops"]),
        "runs": rows,
        "profiles": profiles,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"flops-{device.type}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(bench_flops.table(rows))
    print(f"load average {' '.join(f'{v:.1f}' for v in rows[-1]['load_average'])}; results written to {path}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.scale:
        return scale_main(args)
    from worker.engine.bench_speed import run_child
    from worker.engine.devices import resolve_device

    args.sizes = [n for group in args.sizes for n in group] if args.sizes else list(SPEED_SIZES)
    device, notice = resolve_device(args.gpu)
    if notice:
        print(f"note: {notice}")
    if args.methods:
        return methods_main(args, device)
    if args.flops:
        return flops_main(args, device)
    if args.quick:
        args.sizes, args.naive_n, args.accuracy_n = [500, 2000], 500, 600
    results: dict = {
        "version": __version__,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "epochs": args.epochs,
        "date": time.strftime("%Y-%m-%d"),
        "speed": [],
        "speedup": [],
    }
    with tempfile.TemporaryDirectory(prefix="cryoclust-bench-") as tmp:
        work = Path(tmp)
        sizes = sorted(set(args.sizes) | ({args.naive_n} if args.naive_n else set()))
        stacks = {n: _simulated_stack(work / f"n{n}", n, args.box, seed=n) for n in sizes}
        for n in args.sizes:
            for precision in args.precision:
                print(f"engine {precision}: N={n:,} ...", flush=True)
                results["speed"].append(
                    run_child(
                        "engine",
                        stack=stacks[n],
                        epochs=args.epochs,
                        size=args.size,
                        device=device,
                        precision=precision,
                    )
                )
        if args.naive_n:
            print(f"naive pipeline: N={args.naive_n:,} ...", flush=True)
            naive = run_child(
                "naive",
                stack=stacks[args.naive_n],
                epochs=args.epochs,
                size=args.size,
                workdir=work / "naive",
            )
            results["speed"].append(naive)
            for precision in args.precision:
                engine = [
                    r
                    for r in results["speed"]
                    if r["pipeline"] == "engine" and r["n"] == args.naive_n and r["precision"] == precision
                ]
                if not engine:
                    engine = [
                        run_child(
                            "engine",
                            stack=stacks[args.naive_n],
                            epochs=args.epochs,
                            size=args.size,
                            device=device,
                            precision=precision,
                        )
                    ]
                    results["speed"].append(engine[0])
                e = engine[0]
                results["speedup"].append(
                    {
                        "n": args.naive_n,
                        "precision": precision,
                        "train": e["pairs_per_second"] / naive["pairs_per_second"],
                        "embed": e["embed_per_second"] / naive["embed_per_second"],
                        "round": naive["round_seconds"] / e["round_seconds"],
                    }
                )
        if args.accuracy_n:
            print(f"accuracy: N={args.accuracy_n:,} ...", flush=True)
            results["accuracy"] = accuracy(
                args.accuracy_n, epochs=5, rounds=3, device=str(device), workdir=work
            )
    args.output.mkdir(parents=True, exist_ok=True)
    name = f"bench-{device.type}{'-quick' if args.quick else ''}.json"
    (args.output / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    print(f"results written to {args.output / name}")
    return 0
