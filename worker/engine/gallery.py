"""PNG pictures of particle images: a captioned gallery of class averages and small thumbnails.

Uses numpy and Pillow only (the API process draws thumbnails and must not import torch).

Example:
    from worker.engine.gallery import gallery_png, thumbnail_png
    png = gallery_png(averages, ["#1  1,204 (24%)", "#2  3,796 (76%)"])
    Path("class_averages.png").write_bytes(png)
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["gallery_png", "thumbnail_png", "to_uint8"]

BACKGROUND = 24  # dark grey between tiles, as class-average galleries are usually shown
TEXT = 235
GAP = 4  # pixels between tiles
PERCENTILES = (1.0, 99.0)  # robust contrast: a few hot or dead pixels do not wash an image out


def to_uint8(image: np.ndarray, low: float = PERCENTILES[0], high: float = PERCENTILES[1]) -> np.ndarray:
    """Scale a 2-D image to 0..255, mapping its low..high percentiles to black..white."""
    values = np.asarray(image, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected one 2-D image, got shape {values.shape}")
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = np.percentile(values[finite], [low, high])
    if not hi > lo:  # a flat image: show it mid-grey rather than divide by zero
        return np.full(values.shape, 128, dtype=np.uint8)
    scaled = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def thumbnail_png(image: np.ndarray, size: int = 64) -> bytes:
    """One image as a PNG whose longer side is `size` pixels."""
    if size < 1:
        raise ValueError(f"thumbnail size must be at least 1, got {size}")
    return _png(_scaled(to_uint8(image), size))


def gallery_png(
    images: np.ndarray | Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    columns: int | None = None,
    tile: int = 128,
    note: str | None = None,
) -> bytes:
    """A grid of images (each scaled to tile x tile with its own contrast) with a caption under
    each, and a `note` line under the grid when given."""
    pictures = [np.asarray(image) for image in images]
    if not pictures:
        raise ValueError("a gallery needs at least one image")
    if captions is not None and len(captions) != len(pictures):
        raise ValueError(f"{len(captions)} captions for {len(pictures)} images")
    if tile < 8:
        raise ValueError(f"tile must be at least 8 pixels, got {tile}")
    columns = columns or math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    font = ImageFont.load_default()
    line_height = _line_height(font) + 2 * GAP
    caption_height = line_height if captions is not None else 0
    cell_w, cell_h = tile + GAP, tile + caption_height + GAP
    note_height = line_height if note else 0
    width = columns * cell_w + GAP
    sheet = Image.new("L", (width, rows * cell_h + GAP + note_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if note:
        draw.text((GAP, rows * cell_h + GAP), _fit(draw, note, font, width - 2 * GAP), fill=TEXT, font=font)
    for i, picture in enumerate(pictures):
        x = GAP + (i % columns) * cell_w
        y = GAP + (i // columns) * cell_h
        thumb = _scaled(to_uint8(picture), tile)
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        if captions is not None:
            text = _fit(draw, str(captions[i]), font, tile)
            width = draw.textlength(text, font=font)
            draw.text((x + (tile - width) / 2, y + tile + GAP), text, fill=TEXT, font=font)
    return _png(sheet)


def _scaled(pixels: np.ndarray, size: int) -> Image.Image:
    picture = Image.fromarray(pixels)
    height, width = pixels.shape
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return picture.resize(shape, Image.Resampling.LANCZOS) if shape != picture.size else picture


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Shorten text with an ellipsis until it fits the tile width."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _line_height(font: ImageFont.ImageFont) -> int:
    left, top, right, bottom = font.getbbox("#0123456789 (%)Åg")
    return int(math.ceil(bottom - min(top, 0)))


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
