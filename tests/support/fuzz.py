"""Hypothesis strategies for damaged particle files, shared by the reader and upload fuzz tests.

Valid MRC stacks (modes 0, 1, 2, 6, 12) and the mutations applied to their bytes (truncation,
bit flips, absurd header words, NaN/Inf in the data, garbage appended, emptiness); RELION .star
texts with missing columns, bad image numbers and paths that leave their folder.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import strategies as st

MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
# Header words (4 bytes each): nx, ny, nz, mode, mx(7), ispg(22), nsymbt(23).
HEADER_WORDS = {"nx": 0, "ny": 1, "nz": 2, "mode": 3, "mx": 7, "cella_x": 10, "ispg": 22, "nsymbt": 23}
ABSURD = st.sampled_from([0, -1, 1, 2, 3, 4, 101, 255, 10**9, 2**31 - 1, -(2**31)]) | st.integers(
    -(2**31), 2**31 - 1
)


@st.composite
def valid_stacks(draw):
    mode = draw(st.sampled_from(sorted(MODES)))
    n = draw(st.integers(1, 4))
    box = draw(st.sampled_from([2, 4, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    images = (rng.normal(size=(n, box, box)) * 20).astype(MODES[mode])
    return images


def set_header_word(data: bytearray, word: int, value: int) -> None:
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
            set_header_word(data, HEADER_WORDS[step[1]], step[2])
        elif kind == "nonfinite" and len(data) >= 1028:
            # Float32 data: overwrite one value; other modes just get odd bytes there.
            offset = 1024 + 4 * int(step[1] * ((len(data) - 1024) // 4 - 1))
            struct.pack_into("<f", data, offset, step[2])
        elif kind == "append":
            data += step[1]
        elif kind == "empty":
            data = bytearray()
    return bytes(data)


OUTSIDE = "outside.mrcs"
INSIDE = "a.mrcs"
PATHS = [
    INSIDE,
    f"{INSIDE}:mrcs",
    f"./{INSIDE}",
    f"sub/../{INSIDE}",
    f"../{OUTSIDE}",
    f"sub/../../{OUTSIDE}",
    "link.mrcs",
    "missing.mrcs",
    "",
    " ",
    "@",
    "sub",
    "/etc/passwd",
    "/dev/zero",
    "OUTSIDE_ABS",
]
NUMBERS = ["1", "2", "3", "4", "0", "-1", "000001", "1000000000", "abc", "", "1.5", "nan"]
COLUMNS = [
    "rlnImageName",
    "rlnOpticsGroup",
    "rlnImagePixelSize",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnVoltage",
    "rlnClassNumber",
    "rlnDetectorPixelSize",
    "rlnMagnification",
]
VALUES = ["1", "2", "0", "-3", "1.5", "nan", "inf", "abc", "1e30", '""']


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
        lines += [
            "data_optics",
            "",
            "loop_",
            "_rlnOpticsGroup #1",
            "_rlnImagePixelSize #2",
            "_rlnVoltage #3",
            f"{group} {draw(st.sampled_from(VALUES))} 300",
            "",
        ]
    lines += [f"data_{draw(st.sampled_from(['particles', 'images', '']))}", "", "loop_"]
    lines += [f"_{column} #{i + 1}" for i, column in enumerate(columns)]
    lines += [" ".join(value if value.strip() else '""' for value in row) for row in rows]
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):  # damage the text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=8)) + text[cut + draw(st.integers(0, 8)) :]
    return text
