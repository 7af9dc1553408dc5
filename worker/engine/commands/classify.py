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

from worker.engine.errors import CommandError

def _checked(param):
    """An argparse type that converts and checks a value as the engine's definition says."""

    def convert(text: str):
        try:
            value = param.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {param.kind.__name__}") from None
        problem = param.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{text}: {problem}")
        return value

    convert.__name__ = param.kind.__name__
    return convert


def add_job_parameters(parser: argparse.ArgumentParser) -> None:
    """One flag per job parameter of worker/engine/config.py's PARAMETERS (defaults included)."""
    from worker.engine.config import AUTO, PARAMETERS

    group = parser.add_argument_group("job parameters (the same as the API's and the page's)")
    for p in PARAMETERS:
        if p.kind is bool:
            group.add_argument(*p.cli_flags, dest=p.name, action=argparse.BooleanOptionalAction, default=p.default, help=p.describe())
        elif p.choices:
            group.add_argument(*p.cli_flags, dest=p.name, choices=p.choices, default=p.default, help=p.describe())
        else:
            metavar = p.name.upper() if p.default is AUTO or p.kind is str else None
            group.add_argument(*p.cli_flags, dest=p.name, type=_checked(p), default=p.default, metavar=metavar, help=p.describe())


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", type=Path, help="particle stack (.mrcs/.mrc), RELION .star, or folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("-d", "--dataset_dir", type=Path, help="folder of stacks or images (instead of INPUT)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_job_parameters(parser)


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


def config_from_args(args: argparse.Namespace):
    """The engine's ClassifyConfig from the parsed flags (auto ones still auto)."""
    from worker.engine.config import PARAMETERS, ClassifyConfig

    return ClassifyConfig.from_dict({p.name: getattr(args, p.name) for p in PARAMETERS})


def main(args: argparse.Namespace) -> int:
    from worker.engine.io.particles import ParticleStack
    from worker.engine.pipeline import classify

    source = args.input or args.dataset_dir
    if source is None:
        raise CommandError("give a particle stack, a .star file, or -d FOLDER")
    if args.input is not None and args.dataset_dir is not None:
        raise CommandError("give either INPUT or -d/--dataset_dir, not both")
    config = config_from_args(args)
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
