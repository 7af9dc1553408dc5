"""The binary embedding (backend/embedding_binary.py) and the client's decoder agree, and the fast
labels.csv reader gives what the csv module gives, falling back to it for unusual files."""

from __future__ import annotations

import numpy as np
import pytest

from backend import artifacts, embedding_binary
from cryoclust.client import decode_embedding
from worker.engine.outputs import read_labels_csv, write_labels_csv


@pytest.mark.parametrize("n", [0, 1, 2, 1001])
def test_pack_and_decode_give_the_same_floats_and_classes(n):
    rng = np.random.default_rng(n)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    classes = rng.integers(1, 1001, size=n)
    data = embedding_binary.pack(xy, classes)
    assert data[:4] == b"CCE1" and len(data) % 4 == 0 and len(data) == 16 + 10 * n + 2 * (n % 2)
    emb = decode_embedding(data)
    np.testing.assert_array_equal(emb.xy, xy)
    np.testing.assert_array_equal(emb.labels, classes)


def test_pack_refuses_classes_it_cannot_hold_and_decode_refuses_other_bytes():
    with pytest.raises(ValueError, match="1..65535"):
        embedding_binary.pack(np.zeros((2, 2), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="CCE1"):
        decode_embedding(b'{"x": []}')
    with pytest.raises(ValueError, match="cut short"):
        decode_embedding(embedding_binary.pack(np.zeros((4, 2), np.float32), np.ones(4, int))[:40])


@pytest.mark.parametrize(
    ("accept", "fmt", "binary"),
    [
        (None, None, False),
        ("application/json", None, False),
        ("application/octet-stream", None, True),
        ("*/*", None, False),
        ("application/octet-stream, application/json", None, False),
        ("application/json", "binary", True),
        ("application/octet-stream", "json", False),
    ],
)
def test_the_form_is_chosen_by_query_then_accept(accept, fmt, binary):
    assert embedding_binary.wants_binary(accept, fmt) is binary


def test_fast_labels_match_the_csv_module_with_commas_in_names(tmp_path):
    labels = np.random.default_rng(0).integers(0, 120, size=5000)
    names = [f"{i + 1:06d}@stack,with comma.mrcs" if i % 3 else f"{i + 1:06d}@a.mrcs" for i in range(5000)]
    path = tmp_path / "labels.csv"
    write_labels_csv(path, labels, names)
    parsed = artifacts.parse_class_column(path.read_bytes())
    np.testing.assert_array_equal(parsed, labels)
    np.testing.assert_array_equal(parsed, read_labels_csv(path))
    # \n line ends and no final newline read the same
    unix = path.read_bytes().replace(b"\r\n", b"\n").rstrip(b"\n")
    np.testing.assert_array_equal(artifacts.parse_class_column(unix), labels)


def test_unusual_files_fall_back_to_the_csv_module(tmp_path):
    path = tmp_path / "round_01" / "labels.csv"
    path.parent.mkdir()
    write_labels_csv(path, np.array([2, 0, 1]), ["1@a.mrcs", "2@x,5\nbreak.mrcs", "3@a.mrcs"])
    assert artifacts.parse_class_column(path.read_bytes()) is None
    got = artifacts.labels(path.parent)
    np.testing.assert_array_equal(got, [2, 0, 1])
    assert not got.flags.writeable  # shared by requests through the cache
    assert artifacts.parse_class_column(b"index,image_name,klass\r\n0,a,1\r\n") is None
