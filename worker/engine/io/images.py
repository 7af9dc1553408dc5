"""Single particle images in ordinary picture files (PNG, JPEG, TIFF), read as greyscale float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from worker.engine.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# Pillow modes whose values are kept as they are (16-bit, 32-bit integer and float images).
NUMERIC_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) of a picture file, reading only its header."""
    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise InputError(
                    f"{path}: has {img.n_frames} frames; use one image per file or an .mrcs stack"
                )
            return img.height, img.width
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown or damaged format)") from None
    except OSError as err:
        raise InputError(f"{path}: not a readable image ({err})") from None


def read_image(path: Path) -> np.ndarray:
    """Pixels of a picture file as float32 (height, width); colour is turned into grey."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in NUMERIC_MODES and img.mode != "L":
                img = img.convert("L")
            return np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown or damaged format)") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable image ({err})") from None
