"""Reading a job's results from its out_dir (what the engine wrote, round by round).

A folder round_NN exists only once complete (the engine renames it into place), so whatever is
listed here can be read whole, even while the job is still running.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from worker.engine.outputs import FULL_SIZE_FILE, UMAP_FILE, completed_rounds, read_labels_csv, round_dir

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
    """0-based class of every particle in this round (read-only: it is shared by requests).

    A round folder never changes once complete, so the parsed labels are kept for the next
    request (a page of class members, the embedding, an export), keyed by the file's identity.
    """
    path = folder / "labels.csv"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise HTTPException(404, "labels.csv is missing") from None
    return _cached_labels(str(path), st.st_ino, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)  # 8 rounds of 1M particles: 64 MB
def _cached_labels(path: str, inode: int, size: int, mtime_ns: int) -> np.ndarray:
    result = parse_class_column(Path(path).read_bytes())
    if result is None:  # an unusual file (quoted newlines, ...): the csv module's reading
        result = read_labels_csv(Path(path))
    result.setflags(write=False)
    return result


def parse_class_column(data: bytes) -> np.ndarray | None:
    """0-based labels from the bytes of a labels.csv whose last column is "class", parsed with
    numpy (about 30 times faster than the csv module at 1M rows); None when the file is not
    plain enough for that (then the caller reads it with the csv module)."""
    header_end = data.find(b"\n")
    if header_end < 0 or data[:header_end].rstrip(b"\r").rsplit(b",", 1)[-1] != b"class":
        return None
    body = np.frombuffer(data, dtype=np.uint8, offset=header_end + 1)
    if body.size == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(body == ord("\n"))
    if ends.size == 0 or ends[-1] != body.size - 1:
        ends = np.append(ends, body.size)
    ends = ends - (body[np.minimum(ends, body.size) - 1] == ord("\r"))  # csv writes \r\n
    quotes = np.flatnonzero(body == ord('"'))
    if quotes.size and np.any(np.bincount(np.searchsorted(ends, quotes), minlength=ends.size) % 2):
        return None  # a quoted name runs over a line break
    commas = np.flatnonzero(body == ord(","))
    last = np.searchsorted(commas, ends) - 1
    if last.size and last[0] < 0:
        return None
    starts = commas[last] + 1
    previous_ends = np.concatenate(([-1], ends[:-1]))
    widths = ends - starts
    if np.any(starts <= previous_ends) or np.any(widths < 1) or widths.max() > 9:
        return None
    value = np.zeros(ends.size, dtype=np.int64)
    for place in range(int(widths.max())):
        rows = widths > place
        digit = body[starts[rows] + place].astype(np.int64) - ord("0")
        if np.any((digit < 0) | (digit > 9)):
            return None
        value[rows] = value[rows] * 10 + digit
    return value - 1


EMBEDDING_VIEWS = {"pca": "embedding_2d.npy", "umap": UMAP_FILE}  # view -> its (N, 2) file


def embedding_views(folder: Path) -> list[str]:
    """The 2-D views this round has: "pca" always, "umap" for the last round of a job with umap on."""
    return [view for view, name in EMBEDDING_VIEWS.items() if (folder / name).is_file()]


def embedding_2d(folder: Path, view: str = "pca") -> np.ndarray:
    path = folder / EMBEDDING_VIEWS[view]
    if not path.is_file():
        if view == "umap":
            raise HTTPException(
                404,
                f"{folder.name} has no UMAP view: only the last round of a job run with umap on gets one",
            )
        raise HTTPException(404, f"{path.name} is missing")
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


def averages_file(folder: Path, model_size: bool = False) -> Path:
    """A round's class averages as served by default: at the input's full box when the round has
    them (the last round of a finished job), else (or with `model_size`) at the model size."""
    full = folder / FULL_SIZE_FILE
    return full if full.is_file() and not model_size else folder / "class_averages.mrcs"


def classes_with_nyquist(folder: Path, pixel_size_known: bool) -> list[dict]:
    """classes.json with each FRC figure also as a fraction of Nyquist (1.0: correlated up to
    Nyquist); without a known pixel size the Å figure is dropped, being a 1 Å/px stand-in.
    `full_size` says whether the round's averages are served at the input's box."""
    classes = read_json(folder / "classes.json")
    pixel = averages_pixel_size(folder)
    full_size = (folder / FULL_SIZE_FILE).is_file()
    for row in classes:
        quality = row.get("quality")
        row["pixel_size_known"] = pixel_size_known
        row["full_size"] = full_size
        row["quality_nyquist"] = round(2.0 * pixel / quality, 4) if quality and pixel else None
        if not pixel_size_known:
            row["quality"] = None
    return classes
