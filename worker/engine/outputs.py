"""Writing a run's results: one complete folder per round, renamed into place when done.

A folder `round_NN` exists only once everything in it is written, so a run that stops at any
point (killed worker, full disk) leaves earlier rounds intact and can resume after the last one.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np

from worker.engine.gallery import gallery_png
from worker.engine.io.atomic import temporary_folder, temporary_sibling
from worker.engine.io.mrc import write_stack
from worker.engine.io.star import write_particles_star

ROUND_DIR = re.compile(r"^round_(\d{2,})$")
FULL_SIZE_FILE = "class_averages_full.mrcs"  # a round's averages at the input's box and pixel size
UMAP_FILE = "embedding_umap.npy"  # the last round's UMAP layout (N, 2), beside embedding_2d.npy (PCA)


def round_dir(out_dir: Path, round_index: int) -> Path:
    return out_dir / f"round_{round_index:02d}"


def write_json(path: Path, data) -> None:
    """Write JSON through a temporary file so readers never see half a document."""
    with temporary_sibling(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def write_bytes(path: Path, data: bytes) -> None:
    with temporary_sibling(path) as tmp:
        tmp.write_bytes(data)


def completed_rounds(out_dir: Path) -> list[int]:
    """Round numbers whose folders are complete: 0 (the initial classes, written by a run of 0
    rounds) when there, then 1, 2, ... stopping at the first gap."""
    found = sorted(int(m.group(1)) for p in out_dir.glob("round_*") if (m := ROUND_DIR.match(p.name)))
    done = [0] if found and found[0] == 0 else []
    for expected, number in enumerate((f for f in found if f > 0), start=1):
        if number != expected:
            break
        done.append(number)
    return done


def class_table(
    labels: np.ndarray,
    k: int,
    quality: list[float | None] | None = None,
    pixel_size: float | None = None,
    empty_class: int | None = None,
) -> list[dict]:
    """Per class: number (1-based), count, fraction, `empty` (whether it is the class given to the
    boxes that look empty, 0-based `empty_class`; see worker.engine.empty_boxes), and with
    `quality` the FRC figure in Å at `pixel_size` (the averages') and as a fraction of Nyquist,
    which needs no pixel size."""
    counts = np.bincount(labels, minlength=k)
    rows = []
    for c in range(k):
        row = {
            "class": c + 1,
            "count": int(counts[c]),
            "fraction": float(counts[c] / len(labels)),
            "empty": c == empty_class,
        }
        if quality is not None:
            row["quality"] = quality[c]
            if pixel_size is not None:
                row["quality_nyquist"] = nyquist_fraction(quality[c], pixel_size)
        rows.append(row)
    return rows


def nyquist_fraction(quality: float | None, pixel_size: float) -> float | None:
    """An FRC resolution (Å at `pixel_size`) as a fraction of Nyquist: 1.0 correlates up to it."""
    return round(2.0 * pixel_size / quality, 4) if quality else None


def quality_text(
    row: dict, pixel_size: float, pixel_size_known: bool, angstrom: str = "Å", nyquist: str = "× Nyquist"
) -> str | None:
    """A class's FRC figure for people: in Å when the pixel size is known; otherwise as a
    fraction of Nyquist, since the Å figure would be in units of a 1 Å/px stand-in."""
    quality = row.get("quality")
    if not quality:
        return None
    if pixel_size_known:
        return f"{quality:.1f} {angstrom}"
    fraction = row.get("quality_nyquist") or nyquist_fraction(quality, pixel_size)
    return f"{fraction:.2f} {nyquist}"


UNKNOWN_PIXEL_NOTE = "pixel size unknown: FRC as a fraction of Nyquist"


def captions(classes: list[dict], pixel_size: float, pixel_size_known: bool) -> list[str]:
    """The gallery's caption of each class: number, count, share, FRC figure, and "empty" on the
    class of boxes that look empty."""
    text = []
    for row in classes:
        # "empty" next to the number: a caption too long for its tile loses its end
        empty = " empty" if row.get("empty") else ""
        line = f"#{row['class']}{empty}  {row['count']:,} ({100 * row['fraction']:.0f}%)"
        # "A": the gallery's font may have no Å glyph; short words: a caption is one tile wide
        quality = quality_text(row, pixel_size, pixel_size_known, angstrom="A", nyquist="Nyq")
        if quality:
            line += f"  {quality}"
        text.append(line)
    return text


def gallery(averages: np.ndarray, classes: list[dict], pixel_size: float, pixel_size_known: bool) -> bytes:
    """The PNG gallery of a round's averages, saying so when the pixel size is unknown."""
    note = None if pixel_size_known else UNKNOWN_PIXEL_NOTE
    return gallery_png(averages, captions(classes, pixel_size, pixel_size_known), note=note)


def write_labels_csv(path: Path, labels: np.ndarray, image_names: list[str]) -> None:
    with temporary_sibling(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "image_name", "class"])
        writer.writerows(zip(range(len(labels)), image_names, (labels + 1).tolist()))


def read_labels_csv(path: Path) -> np.ndarray:
    """0-based labels from a labels.csv (whose classes are 1-based)."""
    with path.open(newline="") as handle:
        return np.array([int(row["class"]) - 1 for row in csv.DictReader(handle)], dtype=np.int64)


def write_round(
    out_dir: Path,
    round_index: int,
    *,
    labels: np.ndarray,
    image_names: list[str],
    embedding: np.ndarray,
    embedding_2d: np.ndarray,
    averages: np.ndarray,
    embedding_umap: np.ndarray | None = None,
    pixel_size: float,
    pixel_size_known: bool,
    classes: list[dict],
    loss: list[dict],
    info: dict,
    extra: dict[str, dict[str, np.ndarray]] | None = None,
) -> Path:
    """Write every file of a round into a temporary folder, then rename it into place."""
    final = round_dir(out_dir, round_index)
    with temporary_folder(final) as tmp:
        write_labels_csv(tmp / "labels.csv", labels, image_names)
        np.save(tmp / "embedding.npy", embedding.astype(np.float32))
        np.save(tmp / "embedding_2d.npy", embedding_2d.astype(np.float32))
        if embedding_umap is not None:
            np.save(tmp / UMAP_FILE, embedding_umap.astype(np.float32))
        write_stack(tmp / "class_averages.mrcs", averages.astype(np.float32), pixel_size)
        write_bytes(tmp / "class_averages.png", gallery(averages, classes, pixel_size, pixel_size_known))
        write_json(tmp / "classes.json", classes)
        write_json(tmp / "loss.json", loss)
        write_json(tmp / "round.json", info)
        for name, arrays in (extra or {}).items():  # a method's state, e.g. method_state.npz
            np.savez(tmp / name, **arrays)
    return final


def copy_file(source: Path, target: Path) -> None:
    with temporary_sibling(target) as tmp:
        shutil.copyfile(source, tmp)


def write_final(out_dir: Path, last_round: int, stack, summary: dict) -> None:
    """Top-level results: the RELION star of the last round, its averages, the summary.

    The star's image names are relative to OUT, so RELION finds the particles from there.
    """
    last = round_dir(out_dir, last_round)
    labels = read_labels_csv(last / "labels.csv")
    write_particles_star(
        out_dir / "particles.star",
        stack.image_names_relative_to(out_dir),
        labels + 1,
        pixel_size=stack.pixel_size,
        ctf=stack.ctf,
        image_size=stack.box,
    )
    for name in ("class_averages.mrcs", "class_averages.png", "classes.json"):
        copy_file(last / name, out_dir / name)
    write_json(out_dir / "summary.json", summary)
