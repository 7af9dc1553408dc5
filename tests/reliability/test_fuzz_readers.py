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
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability_support import mrc_bytes
from worker.engine.errors import InputError
from worker.engine.io.particles import ParticleStack

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False)

MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
# Header words (4 bytes each): nx, ny, nz, mode, mx(7), ispg(22), nsymbt(23).
HEADER_WORDS = {"nx": 0, "ny": 1, "nz": 2, "mode": 3, "mx": 7, "cella_x": 10, "ispg": 22, "nsymbt": 23}
ABSURD = st.sampled_from([0, -1, 1, 2, 3, 4, 101, 255, 10**9, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1)


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="fuzz-readers-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@st.composite
def valid_stacks(draw):
    mode = draw(st.sampled_from(sorted(MODES)))
    n = draw(st.integers(1, 4))
    box = draw(st.sampled_from([2, 4, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    images = (rng.normal(size=(n, box, box)) * 20).astype(MODES[mode])
    return images


def _set_word(data: bytearray, word: int, value: int) -> None:
    if word == HEADER_WORDS["cella_x"]:
        struct.pack_into("<f", data, 4 * word, float(value))
    else:
        struct.pack_into("<i", data, 4 * word, value)


@st.composite
def mutations(draw):
    """A list of (kind, arguments) applied in order to a valid file's bytes."""
    kinds = st.one_of(
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
        st.tuples(st.just("header"), st.sampled_from(sorted(HEADER_WORDS)), ABSURD),
        st.tuples(st.just("nonfinite"), st.floats(0, 1), st.sampled_from([np.nan, np.inf, -np.inf])),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("empty")),
    )
    return draw(st.lists(kinds, min_size=1, max_size=4))


def mutate(raw: bytes, steps: list[tuple]) -> bytes:
    data = bytearray(raw)
    for step in steps:
        kind = step[0]
        if kind == "truncate":
            data = data[: int(step[1] * len(data))]
        elif kind == "flip" and data:
            data[step[1] % len(data)] ^= 1 << step[2]
        elif kind == "header" and len(data) >= 1024:
            _set_word(data, HEADER_WORDS[step[1]], step[2])
        elif kind == "nonfinite" and len(data) >= 1028:
            # Float32 data: overwrite one value; other modes just get odd bytes there.
            offset = 1024 + 4 * int(step[1] * ((len(data) - 1024) // 4 - 1))
            struct.pack_into("<f", data, offset, step[2])
        elif kind == "append":
            data += step[1]
        elif kind == "empty":
            data = bytearray()
    return bytes(data)


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
@given(nz=st.sampled_from([10**9, 2**31 - 1, 10**6 + 1]), box=st.sampled_from([64, 256, 4096]),
       mode=st.sampled_from(sorted(MODES)))
def test_header_claiming_absurd_counts_is_refused_without_allocating(scratch, nz, box, mode):
    folder = Path(tempfile.mkdtemp(dir=scratch))
    raw = bytearray(mrc_bytes(np.zeros((2, 4, 4), MODES[mode]), folder))
    for word, value in (("nx", box), ("ny", box), ("nz", nz)):
        _set_word(raw, HEADER_WORDS[word], value)
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
    for name in ("empty.mrcs", "empty.star", "dir.mrcs", "missing.mrcs", "missing.star"):
        with pytest.raises(InputError):
            read_everything(folder / name)


# ----------------------------------------------------------------------------- star files

OUTSIDE = "outside.mrcs"
INSIDE = "a.mrcs"
PATHS = [INSIDE, f"{INSIDE}:mrcs", f"./{INSIDE}", f"sub/../{INSIDE}", f"../{OUTSIDE}", f"sub/../../{OUTSIDE}",
         "link.mrcs", "missing.mrcs", "", " ", "@", "sub", "/etc/passwd", "/dev/zero", "OUTSIDE_ABS"]
NUMBERS = ["1", "2", "3", "4", "0", "-1", "000001", "1000000000", "abc", "", "1.5", "nan"]
COLUMNS = ["rlnImageName", "rlnOpticsGroup", "rlnImagePixelSize", "rlnDefocusU", "rlnDefocusV",
           "rlnVoltage", "rlnClassNumber", "rlnDetectorPixelSize", "rlnMagnification"]
VALUES = ["1", "2", "0", "-3", "1.5", "nan", "inf", "abc", "1e30", '""']


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


@st.composite
def star_texts(draw, outside_abs: str):
    columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=6, unique=True))
    if draw(st.booleans()) and "rlnImageName" not in columns:
        columns.insert(0, "rlnImageName")
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        row = []
        for column in columns:
            if column == "rlnImageName":
                number = draw(st.sampled_from(NUMBERS))
                path = draw(st.sampled_from(PATHS)).replace("OUTSIDE_ABS", outside_abs)
                row.append(f"{number}@{path}" if draw(st.booleans()) or number else path)
            else:
                row.append(draw(st.sampled_from(VALUES)))
        rows.append(row)
    lines = []
    if draw(st.booleans()):
        group = draw(st.sampled_from(["1", "2", "x"]))
        lines += ["data_optics", "", "loop_", "_rlnOpticsGroup #1", "_rlnImagePixelSize #2",
                  "_rlnVoltage #3", f"{group} {draw(st.sampled_from(VALUES))} 300", ""]
    lines += [f"data_{draw(st.sampled_from(['particles', 'images', '']))}", "", "loop_"]
    lines += [f"_{column} #{i + 1}" for i, column in enumerate(columns)]
    lines += [" ".join(value if value.strip() else '""' for value in row) for row in rows]
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):  # damage the text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=8)) + text[cut + draw(st.integers(0, 8)):]
    return text


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
@given(name=st.sampled_from([f"../{OUTSIDE}", "link.mrcs", "OUTSIDE_ABS", f"sub/../../{OUTSIDE}"]),
       number=st.sampled_from(["1", "2", "3"]))
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
