"""Classify a particle stack into 2D classes, with no server.

Reads a .mrcs/.mrc stack, a RELION .star file, a cryoSPARC .cs file or a folder of stacks or
images, trains a Siamese
network and clusters its embeddings with KMeans for several rounds, and writes each round to
OUT/round_NN/ (labels.csv, embeddings, class_averages.mrcs/.png, loss.json) and the final
particles.star (and particles.cs for a .cs input), class averages and summary.json to OUT/.
Running it again on the same OUT resumes after the last complete round.

Clean and reclassify: `--classes 2,5,7` keeps only the particles a previous run put in those
classes (its particles.star's _rlnClassNumber) and classifies them again.

Example:
    cryoclust simulate -n 2000 -k 4 -o sim/
    cryoclust classify sim/particles.mrcs -o run1/ -c 4 -e 5 -r 3 -g cpu
    cryoclust classify particles.star -o run2/ --method invariant -c 20
    cryoclust classify -d stacks/ -o run3/
    cryoclust classify run1/particles.star --classes 1,3 -o run4/ -c 2
    cryoclust classify J42_particles.cs --apix 1.06 -o run5/
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


def _class_list(text: str) -> list[int]:
    try:
        classes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give class numbers like 2,5,7") from None
    if not classes or classes[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: class numbers start at 1")
    return classes


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number")
    return value


def select_classes(stack, classes: list[int]):
    """The particles of `classes` (by the input's _rlnClassNumber) as a stack of their own."""
    import numpy as np

    if stack.class_numbers is None:
        raise CommandError(
            f"{stack.source}: --classes needs a .star with _rlnClassNumber "
            "(the particles.star of a cryoclust run, for example)"
        )
    chosen = np.flatnonzero(np.isin(stack.class_numbers, classes))
    if chosen.size == 0:
        present = sorted(set(stack.class_numbers.tolist()))
        raise CommandError(
            f"{stack.source}: no particle is in classes {classes} (classes present: {present})"
        )
    return stack.subset(chosen)


def describe_pixel_size(stack) -> str:
    return f"{stack.pixel_size:.3f} Å/px" if stack.pixel_size_known else "pixel size unknown (give --apix)"


def class_table_lines(out_dir: Path) -> list[str]:
    """The final classes as a table: size, share and FRC figure (in Å only when the pixel size
    is known, else as a fraction of Nyquist), and which class holds the boxes that look empty,
    from OUT/classes.json and summary.json."""
    import json

    from worker.engine.outputs import quality_text

    classes = json.loads((out_dir / "classes.json").read_text())
    summary = json.loads((out_dir / "summary.json").read_text())
    known = summary.get("pixel_size_known", True)
    pixel = summary["pixel_size"] * summary["box"] / summary["model_size"]  # the averages'
    lines = ["class  particles  share  FRC 0.5"]
    for row in classes:
        quality = quality_text(row, pixel, known) or "-"
        note = "  empty boxes" if row.get("empty") else ""
        lines.append(f"{row['class']:>5}  {row['count']:>9,}  {row['fraction']:>5.0%}  {quality}{note}")
    if not known:
        lines.append("pixel size unknown: FRC as a fraction of Nyquist (give --apix to set it)")
    return lines


def add_job_parameters(parser: argparse.ArgumentParser) -> None:
    """One flag per job parameter of worker/engine/config.py's PARAMETERS (defaults included)."""
    from worker.engine.config import AUTO, PARAMETERS

    group = parser.add_argument_group("job parameters (the same as the API's and the page's)")
    for p in PARAMETERS:
        if p.kind is bool:
            group.add_argument(
                *p.cli_flags,
                dest=p.name,
                action=argparse.BooleanOptionalAction,
                default=p.default,
                help=p.describe(),
            )
        elif p.choices:
            group.add_argument(
                *p.cli_flags, dest=p.name, choices=p.choices, default=p.default, help=p.describe()
            )
        else:
            metavar = p.name.upper() if p.default is AUTO or p.kind is str else None
            group.add_argument(
                *p.cli_flags,
                dest=p.name,
                type=_checked(p),
                default=p.default,
                metavar=metavar,
                help=p.describe(),
            )


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        nargs="?",
        type=Path,
        help="particle stack (.mrcs/.mrc), RELION .star, cryoSPARC .cs, or folder",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument(
        "-d", "--dataset_dir", type=Path, help="folder of stacks or images (instead of INPUT)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--classes",
        type=_class_list,
        metavar="2,5,7",
        help="only the particles of these classes (_rlnClassNumber of the input .star)",
    )
    parser.add_argument(
        "--apix",
        type=_positive,
        metavar="Å",
        help="pixel size in Å, when the input does not say it (or says it wrong)",
    )
    add_job_parameters(parser)


class ProgressPrinter:
    """Turns engine events into a tqdm bar per round and a one-line summary per round."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar = None
        self.done = 0

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from worker.engine.events import EpochDone, LossPoint, RoundDone, RoundStarted, StageProgress

        if isinstance(event, RoundStarted) and not self.quiet:
            self.done = 0
            self.bar = tqdm(
                total=event.pairs_total,
                desc=f"round {event.round}/{event.round_num}",
                unit="pair",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )
        elif isinstance(event, LossPoint) and self.bar is not None:
            total_done = event.pairs_done
            self.bar.update(total_done - self.done)
            self.done = total_done
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}")
        elif isinstance(event, EpochDone) and self.bar is not None:
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}")
        elif isinstance(event, StageProgress) and not self.quiet:
            # the stages before the rounds (preprocess, initial labels) carry round 0
            desc = f"{event.stage} {event.round}" if event.round else event.stage
            if self.bar is None or self.bar.desc != desc:
                if self.bar is not None:
                    self.bar.close()
                self.bar = tqdm(
                    total=event.total,
                    desc=desc,
                    unit="particle",
                    unit_scale=True,
                    leave=False,
                    file=sys.stderr,
                )
            self.bar.update(event.done - self.bar.n)
        elif isinstance(event, RoundDone):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            counts = " / ".join(f"{c:,}" for c in event.counts)
            if event.round == 0:
                print(f"round 0 (initial classes): {event.seconds:.1f} s, class sizes {counts}")
                return
            score = event.scores.get("mean_log_likelihood")
            likelihood = f", mean log-likelihood {score:.4g}" if score is not None else ""
            print(
                f"round {event.round}/{event.round_num}: {event.seconds:.1f} s, loss {event.loss:.4f}, "
                f"churn {event.churn:.1%}{likelihood}, class sizes {counts}"
            )


def config_from_args(args: argparse.Namespace):
    """The engine's ClassifyConfig from the parsed flags (auto ones still auto)."""
    from worker.engine.config import PARAMETERS, ClassifyConfig

    return ClassifyConfig.from_dict({p.name: getattr(args, p.name) for p in PARAMETERS})


def write_final_cs(stack, out_dir: Path) -> Path:
    """particles.cs beside particles.star: the input's uids, blob paths relative to OUT (as the
    star's), and the last round's classes in alignments2D/class."""
    from worker.engine.io.cryosparc import write_stack_cs
    from worker.engine.outputs import completed_rounds, read_labels_csv, round_dir

    labels = read_labels_csv(round_dir(out_dir, completed_rounds(out_dir)[-1]) / "labels.csv")

    names = stack.image_names_relative_to(out_dir)
    return write_stack_cs(out_dir / "particles.cs", stack, names, stack.source.name, labels + 1)


def main(args: argparse.Namespace) -> int:
    from worker.engine.io.particles import ParticleStack
    from worker.engine.pipeline import classify

    source = args.input or args.dataset_dir
    if source is None:
        raise CommandError("give a particle stack, a .star file, or -d FOLDER")
    if args.input is not None and args.dataset_dir is not None:
        raise CommandError("give either INPUT or -d/--dataset_dir, not both")
    config = config_from_args(args)
    with ParticleStack.open(source) as opened:
        stack = select_classes(opened, args.classes) if args.classes else opened
        if args.apix:
            stack.set_pixel_size(args.apix)
        chosen = f" (classes {','.join(map(str, args.classes))} of {len(opened):,})" if args.classes else ""
        print(
            f"{stack.source}: {len(stack):,} particles{chosen}, box {stack.box}, {describe_pixel_size(stack)}"
        )
        result = classify(
            stack,
            config,
            args.output,
            ProgressPrinter(args.quiet),
            on_notice=lambda text: print(f"note: {text}", file=sys.stderr),
            command=getattr(args, "argv", None),
        )
        written = "particles.star"
        if source.suffix.lower() == ".cs":
            write_final_cs(stack, Path(result.out_dir))
            written += ", particles.cs"
    print("\n".join(class_table_lines(Path(result.out_dir))))
    if result.stopped:
        print(f"stopped early: {result.stopped}")
    averages = "class_averages.mrcs at the model size"
    if (Path(result.out_dir) / "class_averages_full.mrcs").is_file():
        averages = "class_averages_full.mrcs at full size, class_averages.mrcs at the model size"
    print(f"done on {result.device}: results in {result.out_dir}/ ({written}, {averages})")
    return 0
