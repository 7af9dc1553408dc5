"""The `cryoclust` command line.

Each sub-command lives in its own module with a docstring (its help text), `add_args(parser)`
and `main(args)`. Modules are imported only when their command runs, so `cryoclust serve`
never imports torch and `cryoclust classify` never imports the web stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from worker.engine.errors import CommandError
from worker.engine.version import __version__

COMMANDS = {
    "classify": "worker.engine.commands.classify",
    "simulate": "worker.engine.commands.simulate",
    "bench": "worker.engine.commands.bench",
    "serve": "backend.serve",
    "worker": "worker.run",
    "import": "cryoclust.commands.import_path",
}

SUMMARIES = {
    "classify": "classify a particle stack into 2D classes (no server needed)",
    "simulate": "write a synthetic particle stack with known classes",
    "bench": "measure speed, memory and accuracy on simulated data",
    "serve": "serve the web app and API (with a local worker by default)",
    "worker": "run a Celery worker that executes classification jobs",
    "import": "register particle files on the server's storage as a dataset (no copy)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryoclust", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cryoclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in SUMMARIES.items():
        if name != command:
            sub.add_parser(name, help=summary)
            continue
        module = importlib.import_module(COMMANDS[name])
        cmd = sub.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_args(cmd)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a full command line; imports only the module of the chosen command."""
    command = next((a for a in argv if a in COMMANDS), None)
    return build_parser(command).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.argv = ["cryoclust", *argv]  # recorded in each run's config.json
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return module.main(args) or 0
    except KeyboardInterrupt:
        print("cryoclust: interrupted", file=sys.stderr)
        return 130
    except (CommandError, OSError, ValueError) as exc:
        print(f"cryoclust {args.command}: error: {exc}", file=sys.stderr)
        return 1
