"""Classify a particle stack into 2D classes, with no server.

Reads a .mrcs/.mrc stack, a RELION .star file or a folder of stacks or images, trains a Siamese
network and clusters its embeddings with KMeans for several rounds, and writes each round to
OUT/round_NN/ (labels.csv, embeddings, class_averages.mrcs/.png, loss.json) and the final
particles.star, class averages and summary.json to OUT/. Running it again on the same OUT
resumes after the last complete round.

Example:
    cryoclust simulate -n 2000 -k 4 -o sim/
    cryoclust classify sim/particles.mrcs -o run1/ -c 4 -e 5 -r 3 -g cpu
    cryoclust classify particles.star -o run2/ --method invariant -c 20
    cryoclust classify -d stacks/ -o run3/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryoclust.cli import CommandError
from worker.engine.config import METHODS, ClassifyConfig

DEFAULT_METHOD = ClassifyConfig.method

DEFAULTS = dict(cluster_num=4, gpu="cuda:0", learning_rate=5e-4, epoch_num=20, batch_size=128, round_num=5)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", type=Path, help="particle stack (.mrcs/.mrc), RELION .star, or folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("-d", "--dataset_dir", type=Path, help="folder of stacks or images (instead of INPUT)")
    parser.add_argument("-c", "--cluster_num", type=int, default=DEFAULTS["cluster_num"], help="number of classes (default 4)")
    parser.add_argument("-g", "--gpu", default=DEFAULTS["gpu"], help="device, e.g. cuda:0 or cpu (default cuda:0, falls back to cpu)")
    parser.add_argument("-l", "--learning_rate", type=float, default=DEFAULTS["learning_rate"], help="Adam learning rate (default 5e-4)")
    parser.add_argument("-e", "--epoch_num", type=int, default=DEFAULTS["epoch_num"], help="epochs per round; an epoch is N pairs (default 20)")
    parser.add_argument("-b", "--batch_size", type=int, default=DEFAULTS["batch_size"], help="pairs per batch (default 128)")
    parser.add_argument("-r", "--round_num", type=int, default=DEFAULTS["round_num"], help="train/KMeans rounds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; runs with the same seed repeat exactly on CPU (default 0)")
    parser.add_argument("--size", type=int, default=64, help="model input size S; larger boxes are Fourier-cropped (default 64)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=f"reference: the original method; invariant: rotation/shift-invariant profiles; pose: likelihood search over class, angle and shift with the CTF, and the network on aligned particles; pose-em: pose without the network (default {DEFAULT_METHOD})")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="network arithmetic (default fp32)")
    parser.add_argument("--phase-flip", action=argparse.BooleanOptionalAction, default=None, help="CTF phase-flip when the .star has defocus (default: on except for reference)")
    parser.add_argument("--align", dest="align_averages", action=argparse.BooleanOptionalAction, default=None, help="align members before averaging (default: on except for reference)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


class ProgressPrinter:
    """Turns engine events into a tqdm bar per round and a one-line summary per round."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar = None
        self.done = 0

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from worker.engine.events import EpochDone, LossPoint, RoundDone, RoundStarted

        if isinstance(event, RoundStarted) and not self.quiet:
            self.done = 0
            self.bar = tqdm(total=event.pairs_total, desc=f"round {event.round}/{event.round_num}", unit="pair", unit_scale=True, leave=False, file=sys.stderr)
        elif isinstance(event, LossPoint) and self.bar is not None:
            total_done = event.pairs_done
            self.bar.update(total_done - self.done)
            self.done = total_done
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}")
        elif isinstance(event, EpochDone) and self.bar is not None:
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}")
        elif isinstance(event, RoundDone):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            counts = " / ".join(f"{c:,}" for c in event.counts)
            print(f"round {event.round}/{event.round_num}: {event.seconds:.1f} s, loss {event.loss:.4f}, class sizes {counts}")


def main(args: argparse.Namespace) -> int:
    from worker.engine.config import ClassifyConfig
    from worker.engine.io.particles import ParticleStack
    from worker.engine.pipeline import classify

    source = args.input or args.dataset_dir
    if source is None:
        raise CommandError("give a particle stack, a .star file, or -d FOLDER")
    if args.input is not None and args.dataset_dir is not None:
        raise CommandError("give either INPUT or -d/--dataset_dir, not both")
    config = ClassifyConfig(
        cluster_num=args.cluster_num,
        learning_rate=args.learning_rate,
        epoch_num=args.epoch_num,
        batch_size=args.batch_size,
        round_num=args.round_num,
        size=args.size,
        seed=args.seed,
        device=args.gpu,
        method=args.method,
        precision=args.precision,
        phase_flip=args.phase_flip,
        align_averages=args.align_averages,
    )
    with ParticleStack.open(source) as stack:
        print(f"{stack.source}: {len(stack):,} particles, box {stack.box}, {stack.pixel_size:.3f} Å/px")
        result = classify(
            stack,
            config,
            args.output,
            ProgressPrinter(args.quiet),
            on_notice=lambda text: print(f"note: {text}", file=sys.stderr),
            command=getattr(args, "argv", None),
        )
    print(f"done on {result.device}: results in {result.out_dir}/ (particles.star, class_averages.mrcs)")
    return 0
