"""The CTF (RELION conventions), phase flipping and Wiener-filtered averages."""

from __future__ import annotations

import numpy as np
import pytest

from worker.engine.ctf import (
    CtfParams,
    apply_ctf,
    ctf_values,
    frequency_grid,
    phase_flip,
    wavelength,
    wiener_average,
)
from worker.engine.simulate import simulate


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_wavelength_at_common_voltages():
    assert float(wavelength(300)) == pytest.approx(0.019687, abs=2e-6)
    assert float(wavelength(200)) == pytest.approx(0.025079, abs=2e-6)


def test_ctf_starts_at_the_amplitude_contrast_and_has_its_first_zero_where_expected():
    defocus, pixel = 20000.0, 2.0
    ctf = CtfParams.uniform([defocus], spherical_aberration=0.0, amplitude_contrast=0.1)
    values = ctf_values(ctf, 128, pixel)[0]
    assert values[0, 0] == pytest.approx(0.1, abs=1e-6)
    # Without Cs the first zero is at pi * lambda * dz * k^2 + asin(Q) = pi.
    lam = float(wavelength(300))
    k_zero = np.sqrt((np.pi - np.arcsin(0.1)) / (np.pi * lam * defocus))
    kx = np.fft.rfftfreq(128, d=pixel)
    row = values[0]
    crossing = np.flatnonzero(np.diff(np.sign(row)) != 0)[0]
    assert kx[crossing] <= k_zero <= kx[crossing + 1]


def test_astigmatism_puts_defocus_u_along_the_defocus_angle():
    box, pixel = 128, 2.0
    ctf = CtfParams.uniform([25000.0], defocus_v=[15000.0], defocus_angle=[90.0])
    values = ctf_values(ctf, box, pixel)[0]
    reference_u = ctf_values(CtfParams.uniform([25000.0]), box, pixel)[0]
    reference_v = ctf_values(CtfParams.uniform([15000.0]), box, pixel)[0]
    kx, ky = frequency_grid(box, pixel)
    along_y = (kx == 0) & (ky > 0)  # azimuth 90 degrees: defocus U
    along_x = (ky == 0) & (kx > 0)  # azimuth 0: defocus V
    assert np.allclose(values[along_y], reference_u[along_y], atol=1e-5)
    assert np.allclose(values[along_x], reference_v[along_x], atol=1e-5)


def test_phase_flip_twice_is_the_identity_and_flipped_ctf_is_its_magnitude():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((5, 32, 32)).astype(np.float32)
    ctf = CtfParams.uniform(rng.uniform(10000, 20000, 5), defocus_angle=rng.uniform(0, 180, 5))
    twice = phase_flip(phase_flip(images, ctf, 3.0), ctf, 3.0)
    assert np.allclose(twice, images, atol=1e-4)
    # An impulse through the CTF, then flipped, has the CTF magnitude as its spectrum.
    impulse = np.zeros((5, 32, 32), dtype=np.float32)
    impulse[:, 0, 0] = 1
    spectrum = np.fft.rfft2(phase_flip(apply_ctf(impulse, ctf, 3.0), ctf, 3.0))
    assert np.allclose(spectrum.real, np.abs(ctf_values(ctf, 32, 3.0)), atol=1e-4)
    with pytest.raises(ValueError, match="CTF parameters for 5 particles, but 3 images"):
        phase_flip(images[:3], ctf, 3.0)


def test_phase_flipping_with_the_true_ctf_brings_the_average_closer_to_the_view():
    sim = simulate(600, 2, 64, snr=0.5, ctf=True, defocus_range=(10000, 30000), seed=1)
    flipped = phase_flip(sim.images, sim.ctf, sim.pixel_size)
    for view in range(2):
        members = sim.views == view
        clean = sim.clean_views[view]
        plain = correlation(sim.images[members].mean(0), clean)
        corrected = correlation(flipped[members].mean(0), clean)
        assert corrected > plain + 0.1, (view, plain, corrected)
        wiener = wiener_average(sim.images[members], sim.ctf.subset(members), sim.pixel_size, 2.0)
        assert correlation(wiener, clean) > corrected


def test_the_device_phase_flip_matches_the_numpy_one_with_astigmatism():
    import torch

    from worker.engine.ctf_device import PhaseFlipper

    rng = np.random.default_rng(4)
    images = rng.standard_normal((40, 48, 48)).astype(np.float32)
    du = rng.uniform(10000, 25000, 40)
    ctf = CtfParams.uniform(du, du - rng.uniform(0, 800, 40), rng.uniform(0, 180, 40), phase_shift=10.0)
    flipper = PhaseFlipper(ctf, 2.5, 48)
    on_device = torch.cat(
        [flipper(torch.from_numpy(images[s : s + 16]), slice(s, s + 16)) for s in (0, 16, 32)]
    )
    assert on_device.dtype == torch.float32 and on_device.shape == (40, 48, 48)
    assert np.allclose(on_device.numpy(), phase_flip(images, ctf, 2.5), atol=1e-4)
    assert not np.allclose(on_device.numpy(), images, atol=1e-2)  # it did flip
