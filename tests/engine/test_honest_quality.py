"""Pixel size unknown: the FRC figure as a fraction of Nyquist, never in Å (gallery, CLI)."""

from __future__ import annotations

import io
import json

import mrcfile
import numpy as np
from PIL import Image

from cryoclust.cli import main
from worker.engine import outputs
from worker.engine.gallery import gallery_png
from worker.engine.simulate import simulate

CLASSES = [
    {"class": 1, "count": 1204, "fraction": 0.24, "quality": 9.4, "quality_nyquist": 0.4255},
    {"class": 2, "count": 3796, "fraction": 0.76, "quality": None, "quality_nyquist": None},
]


def test_captions_give_angstrom_only_for_a_known_pixel_size():
    assert outputs.captions(CLASSES, 2.0, True) == ["#1  1,204 (24%)  9.4 A", "#2  3,796 (76%)"]
    unknown = outputs.captions(CLASSES, 2.0, False)
    assert unknown == ["#1  1,204 (24%)  0.43 Nyq", "#2  3,796 (76%)"]
    assert not any("Å" in line or line.endswith(" A") for line in unknown)
    # without a stored fraction it is worked out from the averages' pixel size: 2 x 2.0 / 9.4
    row = {k: v for k, v in CLASSES[0].items() if k != "quality_nyquist"}
    assert outputs.quality_text(row, 2.0, False) == "0.43 × Nyquist"
    assert outputs.quality_text(row, 2.0, True) == "9.4 Å"


def test_class_table_records_the_fraction_of_nyquist():
    labels = np.array([0, 0, 1, 1, 1])
    rows = outputs.class_table(labels, 2, [8.0, None], pixel_size=2.0)
    assert [r["quality_nyquist"] for r in rows] == [0.5, None]


def test_the_gallery_says_when_the_pixel_size_is_unknown():
    averages = np.random.default_rng(0).normal(size=(2, 32, 32)).astype(np.float32)
    known = np.asarray(Image.open(io.BytesIO(outputs.gallery(averages, CLASSES, 2.0, True))))
    unknown = np.asarray(Image.open(io.BytesIO(outputs.gallery(averages, CLASSES, 2.0, False))))
    assert unknown.shape[0] > known.shape[0] and unknown.shape[1] == known.shape[1]  # a note line
    assert (unknown[known.shape[0] :] != unknown[-1, -1]).sum() > 50  # with text in it
    assert (
        outputs.UNKNOWN_PIXEL_NOTE.startswith("pixel size unknown") and "Å" not in outputs.UNKNOWN_PIXEL_NOTE
    )
    plain = gallery_png(averages, outputs.captions(CLASSES, 2.0, False))
    assert np.asarray(Image.open(io.BytesIO(plain))).shape == known.shape


def _unset_header_stack(tmp_path):
    """A real stack whose header leaves the pixel size unset (voxel size 0)."""
    sim = simulate(n=60, k=2, box=32, snr=2.0, pixel_size=1.0, seed=2)
    path = tmp_path / "unset.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(sim.images.astype(np.float32))
        mrc.set_image_stack()
        mrc.voxel_size = 0.0
    return path


def _classify(path, out, capsys, *extra):
    argv = ["classify", str(path), "-o", str(out), "-c", "2", "-e", "1", "-r", "1", "-g", "cpu"]
    argv += ["--size", "16", "--method", "reference", "-q", "--no-umap", *extra]  # numba: once a process
    assert main(argv) == 0
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_an_unset_header_prints_no_angstrom(tmp_path, capsys):
    out = tmp_path / "run"
    printed = _classify(_unset_header_stack(tmp_path), out, capsys)
    assert "Å" not in printed
    assert "pixel size unknown" in printed and "× Nyquist" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pixel_size_known"] is False
    classes = json.loads((out / "classes.json").read_text())
    assert any(row["quality_nyquist"] for row in classes)
    # the PNG gallery is drawn from the captions of an unknown pixel size (and its note)
    model_pixel = summary["pixel_size"] * summary["box"] / summary["model_size"]
    captions = outputs.captions(classes, model_pixel, False)
    assert not any("Å" in line or line.endswith(" A") for line in captions)
    assert any(line.endswith(" Nyq") for line in captions)
    full = mrcfile.read(out / "class_averages_full.mrcs")  # the last round's gallery shows them
    assert (out / "class_averages.png").read_bytes() == outputs.gallery(full, classes, model_pixel, False)


def test_apix_sets_the_pixel_size_and_the_figures_are_in_angstrom(tmp_path, capsys):
    out = tmp_path / "run"
    printed = _classify(_unset_header_stack(tmp_path), out, capsys, "--apix", "1.3")
    assert "1.300 Å/px" in printed and "pixel size unknown" not in printed and "Nyquist" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pixel_size_known"] is True and summary["pixel_size"] == 1.3
    with mrcfile.open(out / "class_averages_full.mrcs") as mrc:
        assert mrc.data.shape == (2, 32, 32) and np.isclose(float(mrc.voxel_size.x), 1.3, atol=1e-3)
    classes = json.loads((out / "classes.json").read_text())
    rows = [line for line in printed.splitlines() if line.lstrip().startswith(("1 ", "2 "))]
    assert len(rows) == 2
    figures = [outputs.quality_text(row, 2.6, True) for row in classes]
    assert any(f and f.endswith(" Å") for f in figures) and all((f or "-") in printed for f in figures)
