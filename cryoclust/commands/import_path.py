"""Register particle files that already lie on the server's storage as a dataset.

PATH is the server's path of a .mrcs/.mrc stack, or of a RELION .star or cryoSPARC .cs whose
stacks lie under the same import root. The server must list a folder above it in
CRYOCLUST_IMPORT_ROOTS. Nothing is copied: the server reads the files where they are, and a job
fails with a reason if they change or vanish afterwards. Prints the new dataset's id (and a
summary on standard error), so a script can start a job on it.

Example:
  cryoclust import /data/lab/P12/Select/job010/particles.star
  cryoclust import /data/lab/P12/J42/J42_particles.cs --apix 1.06 --name "P12 J42"
  cryoclust import /data/stacks/run1.mrcs --server http://gpu-box:8000 --token "$TOKEN"
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_SERVER = "http://127.0.0.1:8000"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the file's path on the server")
    parser.add_argument(
        "--server",
        default=os.environ.get("CRYOCLUST_SERVER", DEFAULT_SERVER),
        help=f"the server's URL (default: CRYOCLUST_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CRYOCLUST_API_TOKEN") or None,
        help="its API token (default: CRYOCLUST_API_TOKEN)",
    )
    parser.add_argument("--name", help="the dataset's name (default: the file's name)")
    parser.add_argument(
        "--apix",
        type=float,
        metavar="Å",
        help="pixel size in Å, when the files do not say it (or say it wrong)",
    )


def main(args: argparse.Namespace) -> int:
    import httpx

    from cryoclust.client import ApiError, Client

    try:
        with Client(args.server, token=args.token) as client:
            dataset = client.import_path(args.path, name=args.name, pixel_size=args.apix)
    except ApiError as exc:
        print(f"cryoclust import: refused ({exc.status}): {exc.detail}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"cryoclust import: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    pixel = f"{dataset.pixel_size:g} Å/px" if dataset.pixel_size_known else "pixel size unknown"
    print(
        f"dataset {dataset.id}: {dataset.name}, {dataset.n_particles:,} particles of {dataset.box_size} px, "
        f"{pixel}, {len(dataset.files)} file(s) read in place",
        file=sys.stderr,
    )
    print(dataset.id)
    return 0
