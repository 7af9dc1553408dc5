"""Gallery and thumbnail PNGs: sizes, contrast, captions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.engine.gallery import gallery_png, thumbnail_png, to_uint8


def _open(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(png)))


def test_to_uint8_uses_robust_percentiles():
    image = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (100, 1))
    image[0, 0] = 1e6  # one hot pixel must not turn everything else black
    pixels = to_uint8(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (100, 100)
    assert pixels[50, 50] == pytest.approx(128, abs=3)
    assert pixels[1:, 0].max() <= 1 and pixels[:, -1].min() >= 254 and pixels[0, 0] == 255


@pytest.mark.parametrize(
    "image, value", [(np.full((5, 5), 3.0), 128), (np.full((5, 5), np.nan), 0)], ids=["flat", "all-nan"]
)
def test_to_uint8_degenerate_images(image, value):
    assert (to_uint8(image) == value).all()


def test_to_uint8_ignores_nan_pixels():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    image[1, 1] = np.nan
    pixels = to_uint8(image, low=0, high=100)
    assert pixels[0, 0] == 0 and pixels[3, 3] == 255 and pixels[1, 1] == 0


def test_thumbnail_size_and_aspect():
    assert _open(thumbnail_png(np.random.default_rng(0).normal(size=(200, 200)), 64)).shape == (64, 64)
    assert _open(thumbnail_png(np.ones((10, 20)), 40)).shape == (20, 40)
    with pytest.raises(ValueError, match=r"expected one 2-D image, got shape \(3, 8, 8\)"):
        thumbnail_png(np.ones((3, 8, 8)))


def test_gallery_grid_and_captions():
    images = np.random.default_rng(1).normal(size=(5, 64, 64)).astype(np.float32)
    captions = [f"#{i + 1}  1,204 (24%)" for i in range(5)]
    with_text = _open(gallery_png(images, captions, tile=96))
    without = _open(gallery_png(images, [""] * 5, tile=96))
    assert with_text.shape == without.shape
    rows, columns = 2, 3  # ceil(sqrt(5)) columns
    cell_h = (with_text.shape[0] - 4) // rows
    assert with_text.shape[1] == columns * (96 + 4) + 4
    caption_strip = slice(4 + 96 + 2, cell_h)  # under the first row of tiles
    assert (with_text[caption_strip] != without[caption_strip]).sum() > 50  # text drawn
    assert (with_text[4:100, 4:100] == without[4:100, 4:100]).all()  # tiles unchanged
    assert with_text[4:100, 4:100].std() > 30  # each tile has its own full contrast


def test_gallery_columns_and_mixed_sizes():
    pictures = [np.random.default_rng(i).normal(size=(s, s)) for i, s in enumerate((32, 64, 100))]
    sheet = _open(gallery_png(pictures, None, columns=1, tile=50))
    assert sheet.shape == (3 * 54 + 4, 58)


def test_gallery_long_caption_is_shortened():
    sheet = _open(gallery_png(np.ones((1, 16, 16)), ["#1 " + "x" * 200], tile=40))
    assert sheet.shape[1] == 48


@pytest.mark.parametrize(
    "images, captions, message",
    [
        (np.zeros((0, 8, 8)), [], "needs at least one image"),
        (np.zeros((2, 8, 8)), ["a"], "1 captions for 2 images"),
    ],
    ids=["no-images", "caption-count"],
)
def test_gallery_rejects_bad_arguments(images, captions, message):
    with pytest.raises(ValueError, match=message):
        gallery_png(images, captions)
