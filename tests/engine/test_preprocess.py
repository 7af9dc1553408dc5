"""Normalisation and Fourier cropping."""

import numpy as np
import pytest
import torch

from worker.engine.preprocess import fourier_crop, model_size, normalise


def test_normalise_gives_zero_mean_unit_std_per_image():
    images = torch.randn(5, 16, 16) * torch.arange(1, 6).view(5, 1, 1) + 7
    out = normalise(images)
    assert torch.allclose(out.mean((-1, -2)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(out.flatten(1).std(-1), torch.ones(5), atol=1e-5)
    assert torch.equal(normalise(torch.ones(1, 4, 4)), torch.zeros(1, 4, 4))


@pytest.mark.parametrize("box", [128, 127])
def test_fourier_crop_keeps_low_frequencies(box):
    y, x = np.mgrid[0:box, 0:box] / box
    # a low-frequency wave (2 cycles across the box) plus a high-frequency one (50 cycles)
    low = np.cos(2 * np.pi * 2 * x) + 0.5 * np.sin(2 * np.pi * 3 * y)
    high = np.cos(2 * np.pi * 50 * x)
    image = torch.tensor(low + high + 3.0, dtype=torch.float32)
    cropped = fourier_crop(image[None], 64)[0].numpy()
    ys, xs = np.mgrid[0:64, 0:64] / 64
    expected = np.cos(2 * np.pi * 2 * xs) + 0.5 * np.sin(2 * np.pi * 3 * ys) + 3.0
    assert cropped.shape == (64, 64)
    assert (
        np.abs(cropped - expected).max() < 0.05
        if box % 2 == 0
        else np.corrcoef(cropped.ravel(), expected.ravel())[0, 1] > 0.98
    )
    assert cropped.mean() == pytest.approx(3.0, abs=1e-3)


def test_fourier_crop_leaves_small_images_alone_and_model_size_is_even():
    image = torch.randn(2, 32, 32)
    assert fourier_crop(image, 64) is image
    assert model_size(32, 64) == 32
    assert model_size(33, 64) == 32
    assert model_size(256, 64) == 64
