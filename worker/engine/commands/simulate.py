"""Write a synthetic particle stack with known classes.

A 3-D model (--molecule blobs: a random cluster of Gaussian blobs; ring: a ring complex with an
asymmetric arm) is projected along K directions (the true classes), far apart except for
--close-pairs views that get a partner 8-12 degrees away. Each particle is one of these views,
its direction optionally jittered (--view-jitter degrees), rotated in-plane at random, shifted,
multiplied by a CTF and buried in white or pink (1/f) noise at the chosen SNR (signal variance /
noise variance). --junk FRACTION of the boxes hold no proper particle: empty ice, carbon edges,
contamination, aggregates, particles cut by the box edge.

Writes into OUT: particles.mrcs (the stack), particles.star (RELION, with CTF columns when
--ctf is on), truth.csv (index,image_name,view,angle,shift_x,shift_y,defocus_u,defocus_v, and
junk with --junk; view is 1-based, 0 for junk) and views.mrcs (the K noise-free projections).
The stack is written chunk by chunk, in flat memory, so a million particles or more fit; a
progress bar follows the two passes (noise-free particles, then noise).

Example:
  cryoclust simulate -n 2000 -k 4 --snr 1 -o sim_easy
  cryoclust simulate -n 2000 -k 4 --box 64 --snr 0.1 --rotate --shift 3 --ctf \\
      --defocus 10000 25000 --seed 0 -o sim_hard
  cryoclust simulate -n 5000 -k 10 --molecule ring --close-pairs 2 --view-jitter 5 \\
      --snr 0.1 --rotate --shift 4 --ctf --junk 0.1 --noise pink --seed 1 -o sim_real
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from worker.engine.molecules import MOLECULES
from worker.engine.simulate import simulate_to_folder
from worker.engine.simulate_junk import NOISES


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--num", type=int, default=2000, help="particles (default 2000)")
    parser.add_argument("-k", "--views", type=int, default=4, help="views = classes (default 4)")
    parser.add_argument("--box", type=int, default=64, help="box size in pixels (default 64)")
    parser.add_argument("--pixel-size", type=float, default=2.0, help="Å per pixel (default 2)")
    parser.add_argument("--snr", type=float, default=1.0, help="signal/noise variance (default 1)")
    parser.add_argument("--rotate", action="store_true", help="uniform random in-plane rotation")
    parser.add_argument("--shift", type=float, default=0.0, help="max shift per axis in px")
    parser.add_argument("--ctf", action="store_true", help="apply a CTF (300 kV, Cs 2.7, Q 0.1)")
    parser.add_argument(
        "--defocus",
        type=float,
        nargs=2,
        default=(10000.0, 25000.0),
        metavar=("MIN", "MAX"),
        help="defocus range in Å with --ctf (default 10000 25000)",
    )
    parser.add_argument("--molecule", choices=MOLECULES, default="blobs", help="3-D model (default blobs)")
    parser.add_argument(
        "--close-pairs", type=int, default=0, help="views that get a partner 8-12 degrees away (default 0)"
    )
    parser.add_argument(
        "--view-jitter", type=float, default=0.0, help="tilt each particle's view by up to this many degrees"
    )
    parser.add_argument(
        "--junk",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of boxes without a proper particle (class 0 in truth.csv)",
    )
    parser.add_argument(
        "--noise", choices=NOISES, default="white", help="noise spectrum: white or pink (1/f) (default white)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


class _ProgressBar:
    """One tqdm bar per pass over the stack."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.stage, self.done = quiet, None, None, 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.quiet:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = tqdm(
                total=total, desc=stage, unit="img", unit_scale=True, leave=False, file=sys.stderr
            )
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    progress = _ProgressBar(args.quiet)
    try:
        sim, paths = simulate_to_folder(
            args.out,
            on_progress=progress,
            n=args.num,
            k=args.views,
            box=args.box,
            snr=args.snr,
            rotate=args.rotate,
            shift=args.shift,
            ctf=args.ctf,
            defocus_range=tuple(args.defocus),
            pixel_size=args.pixel_size,
            seed=args.seed,
            molecule=args.molecule,
            close_pairs=args.close_pairs,
            view_jitter=args.view_jitter,
            junk=args.junk,
            noise=args.noise,
        )
    finally:
        progress.close()
    params = {k: v for k, v in vars(args).items() if k not in ("command", "quiet")}
    with open(paths["particles"].parent / "simulation.json", "w") as handle:
        json.dump(params, handle, indent=2)
    seconds = time.perf_counter() - started
    junk = int(sim.is_junk.sum())
    print(
        f"wrote {sim.n} particles ({sim.k} views, {args.box} px"
        f"{f', {junk} junk boxes' if junk else ''}) to {paths['particles']} in {seconds:.1f} s"
    )
    return 0
