"""Property-based tests of the readers: whatever the bytes, ParticleStack raises InputError or
reads finite float32 images of the shape it announced; it never raises anything else and never
reads a file outside the folder it is confined to.

Inputs: valid MRC stacks (modes 0, 1, 2, 6, 12) then truncated, bit-flipped, with header fields
overwritten by absurd values (10^9 particles, negative sizes, unknown modes), NaN/Inf written
into the data, garbage appended, or empty; RELION .star files with missing columns, bad image
numbers, missing optics groups, and image paths that leave the folder (../, absolute, symlinks).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import (
    HEADER_WORDS,
    INSIDE,
    MODES,
    OUTSIDE,
    mutate,
    mutations,
    set_header_word,
    star_texts,
    valid_stacks,
)
from support.stacks import mrc_bytes

from worker.engine.errors import InputError
from worker.engine.io.particles import ParticleStack

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="fuzz-readers-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message


def read_everything(path: Path, confine_to: Path | None = None) -> ParticleStack:
    """Open and read every image as the engine and the API do; returns the closed stack."""
    with ParticleStack.open(path, confine_to=confine_to) as stack:
        n, box = len(stack), stack.box
        assert n >= 1 and box >= 1
        seen = 0
        for start, images in stack.chunks(3):
            assert start == seen
            assert images.dtype == np.float32 and images.shape[1:] == (box, box)
            assert np.isfinite(images).all()
            seen += len(images)
        assert seen == n
        picked = stack.read_indices([n - 1, 0, n - 1])
        assert picked.shape == (3, box, box)
    return stack


@FUZZ
@given(images=valid_stacks(), steps=mutations(), suffix=st.sampled_from([".mrcs", ".mrc"]))
def test_damaged_mrc_raises_input_error_or_reads_cleanly(scratch, images, steps, suffix):
    folder = Path(tempfile.mkdtemp(dir=scratch))
    path = folder / f"stack{suffix}"
    path.write_bytes(mutate(mrc_bytes(images, folder), steps))
    try:
        read_everything(path)
    except InputError as err:
        message = str(err)
        assert str(path) in message and one_line(message), message
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@FUZZ
@given(
    nz=st.sampled_from([10**9, 2**31 - 1, 10**6 + 1]),
    box=st.sampled_from([64, 256, 4096]),
    mode=st.sampled_from(sorted(MODES)),
)
def test_header_claiming_absurd_counts_is_refused_without_allocating(scratch, nz, box, mode):
    folder = Path(tempfile.mkdtemp(dir=scratch))
    raw = bytearray(mrc_bytes(np.zeros((2, 4, 4), MODES[mode]), folder))
    for word, value in (("nx", box), ("ny", box), ("nz", nz)):
        set_header_word(raw, HEADER_WORDS[word], value)
    path = folder / "huge.mrcs"
    path.write_bytes(bytes(raw))
    try:
        with pytest.raises(InputError, match="truncated"):
            ParticleStack.open(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_zero_byte_and_folder_and_missing_files(scratch):
    folder = Path(tempfile.mkdtemp(dir=scratch))
    (folder / "empty.mrcs").write_bytes(b"")
    (folder / "empty.star").write_bytes(b"")
    (folder / "dir.mrcs").mkdir()
    reasons = {
        "empty.mrcs": "not an MRC file \\(0 bytes",
        "empty.star": "not a STAR file",
        "dir.mrcs": "no .mrcs/.mrc stacks",
        "missing.mrcs": "file not found",
        "missing.star": "file not found",
    }
    for name, reason in reasons.items():
        with pytest.raises(InputError, match=f"{name}: {reason}"):
            read_everything(folder / name)


# ----------------------------------------------------------------------------- star files


@pytest.fixture(scope="module")
def star_world(scratch):
    """A dataset folder with a 3-image stack, a stack outside it and a link pointing out."""
    root = scratch / "star-world"
    inside = root / "dataset"
    inside.mkdir(parents=True)
    (inside / "sub").mkdir()
    images = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    (inside / INSIDE).write_bytes(mrc_bytes(images, inside))
    (root / OUTSIDE).write_bytes(mrc_bytes(images, root))
    os.symlink(root / OUTSIDE, inside / "link.mrcs")
    return inside


@FUZZ
@given(data=st.data())
def test_star_files_are_read_or_refused_and_never_escape(star_world, data):
    outside = star_world.parent / OUTSIDE
    text = data.draw(star_texts(str(outside)))
    star = star_world / "particles.star"
    star.write_text(text, errors="surrogatepass")
    try:
        stack = read_everything(star, confine_to=star_world)
    except InputError as err:
        assert one_line(str(err)), str(err)
        return
    # Accepted: every file it read lies inside the folder, links resolved.
    for path in stack.files:
        assert Path(path).resolve().is_relative_to(star_world.resolve()), (path, text)


@FUZZ
@given(
    name=st.sampled_from([f"../{OUTSIDE}", "link.mrcs", "OUTSIDE_ABS", f"sub/../../{OUTSIDE}"]),
    number=st.sampled_from(["1", "2", "3"]),
)
def test_star_paths_leaving_the_folder_are_refused(star_world, name, number):
    name = name.replace("OUTSIDE_ABS", str(star_world.parent / OUTSIDE))
    star = star_world / "escape.star"
    star.write_text(f"data_particles\n\nloop_\n_rlnImageName #1\n{number}@{name}\n")
    with pytest.raises(InputError, match="outside"):
        ParticleStack.open(star, confine_to=star_world)


@FUZZ
@given(number=st.sampled_from(["0", "-1", "4", "1000000000", "abc", "1.5"]))
def test_star_bad_image_numbers_are_refused(star_world, number):
    star = star_world / "numbers.star"
    star.write_text(f"data_particles\n\nloop_\n_rlnImageName #1\n1@{INSIDE}\n{number}@{INSIDE}\n")
    with pytest.raises(InputError, match="row 2"):
        ParticleStack.open(star, confine_to=star_world)
