"""Reading a job's results from its out_dir (what the engine wrote, round by round).

A folder round_NN exists only once complete (the engine renames it into place), so whatever is
listed here can be read whole, even while the job is still running.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from worker.engine.outputs import completed_rounds, read_labels_csv, round_dir

ROUND_REF = re.compile(r"^(final|[0-9]{1,4})$")


def rounds(out_dir: Path) -> list[int]:
    return completed_rounds(out_dir) if out_dir.is_dir() else []


def resolve_round(out_dir: Path, ref: str | int) -> tuple[int, Path]:
    """The round number and folder for `ref` (a number or "final"); 404 when not complete."""
    text = str(ref)
    if not ROUND_REF.match(text):
        raise HTTPException(422, f"round must be a number or 'final', got {text!r}")
    done = rounds(out_dir)
    if not done:
        raise HTTPException(404, "no round is complete yet")
    number = done[-1] if text == "final" else int(text)
    if number not in done:
        raise HTTPException(404, f"round {number} is not complete (complete: {done})")
    return number, round_dir(out_dir, number)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HTTPException(404, f"{path.name} is missing") from None


def labels(folder: Path) -> np.ndarray:
    """0-based class of every particle in this round."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise HTTPException(404, "labels.csv is missing")
    return read_labels_csv(path)


def embedding_2d(folder: Path) -> np.ndarray:
    path = folder / "embedding_2d.npy"
    if not path.is_file():
        raise HTTPException(404, "embedding_2d.npy is missing")
    return np.load(path, mmap_mode="r")


def class_count(folder: Path) -> int:
    return len(read_json(folder / "classes.json"))


def check_classes(folder: Path, classes: list[int]) -> None:
    k = class_count(folder)
    bad = [c for c in classes if not 1 <= c <= k]
    if bad:
        raise HTTPException(422, f"classes {bad} are outside 1..{k}")


def averages_pixel_size(folder: Path) -> float | None:
    """Å per pixel of a round's class averages (the size the FRC was measured at)."""
    from worker.engine.io.mrc import read_header

    path = folder / "class_averages.mrcs"
    return read_header(path).pixel_size if path.is_file() else None


def classes_with_nyquist(folder: Path, pixel_size_known: bool) -> list[dict]:
    """classes.json with each FRC figure also as a fraction of Nyquist (1.0: correlated up to
    Nyquist); without a known pixel size the Å figure is dropped, being a 1 Å/px stand-in."""
    classes = read_json(folder / "classes.json")
    pixel = averages_pixel_size(folder)
    for row in classes:
        quality = row.get("quality")
        row["pixel_size_known"] = pixel_size_known
        row["quality_nyquist"] = round(2.0 * pixel / quality, 4) if quality and pixel else None
        if not pixel_size_known:
            row["quality"] = None
    return classes
