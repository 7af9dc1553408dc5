"""RELION STAR files: write_particles_star output, and ParticleStack over star files."""

from __future__ import annotations

import numpy as np
import pytest
import starfile

from worker.engine.ctf import CtfParams
from worker.engine.errors import InputError
from worker.engine.io import ParticleStack, write_particles_star


def _ctf(n: int, voltages) -> CtfParams:
    rng = np.random.default_rng(5)
    u = rng.uniform(10000, 30000, n)
    return CtfParams(
        defocus_u=u,
        defocus_v=u + 300,
        defocus_angle=rng.uniform(0, 180, n),
        voltage=np.asarray(voltages, float),
        spherical_aberration=np.full(n, 2.7),
        amplitude_contrast=np.full(n, 0.1),
        phase_shift=np.zeros(n),
    )


def test_written_star_reads_back_with_starfile(tmp_path):
    names = [f"{i:06d}@stack.mrcs" for i in range(1, 6)]
    path = write_particles_star(
        tmp_path / "p.star",
        names,
        class_numbers=np.array([1, 2, 2, 3, 1]),
        pixel_size=1.34,
        extra={"_rlnAnglePsi": [0, 10, 20, 30, 40], "AutopickFigureOfMerit": np.arange(5.0)},
        image_size=64,
    )
    blocks = starfile.read(path, always_dict=True)
    assert list(blocks) == ["optics", "particles"]
    optics, particles = blocks["optics"], blocks["particles"]
    assert optics["rlnImagePixelSize"].tolist() == [pytest.approx(1.34)]
    assert optics["rlnImageSize"].tolist() == [64]
    assert particles["rlnImageName"].tolist() == names
    assert particles["rlnClassNumber"].tolist() == [1, 2, 2, 3, 1]
    assert particles["rlnOpticsGroup"].tolist() == [1] * 5
    assert particles["rlnAnglePsi"].tolist() == [0, 10, 20, 30, 40]
    assert particles["rlnAutopickFigureOfMerit"].tolist() == [0, 1, 2, 3, 4]
    assert "_rlnImageName" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.star"]


def test_written_star_without_classes(tmp_path):
    path = write_particles_star(tmp_path / "p.star", ["000001@a.mrcs"], pixel_size=2.0)
    particles = starfile.read(path, always_dict=True)["particles"]
    assert "rlnClassNumber" not in particles.columns and len(particles) == 1


@pytest.mark.parametrize(
    "classes, message",
    [([0, 1], "starting at 1"), ([1], "1 class numbers for 2"), ([1.5, 2.0], "integers")],
    ids=["zero-based", "wrong-length", "not-integers"],
)
def test_write_star_rejects_bad_classes(tmp_path, classes, message):
    with pytest.raises(ValueError, match=message):
        write_particles_star(tmp_path / "p.star", ["1@a.mrcs", "2@a.mrcs"], classes, 1.0)
    assert not list(tmp_path.iterdir())


def test_ctf_round_trip_with_two_optics_groups(make_mrc, tmp_path):
    make_mrc("stack.mrcs", n=4, box=8, pixel_size=3.0)
    ctf = _ctf(4, [300, 200, 300, 200])
    names = [f"{i:06d}@stack.mrcs" for i in range(1, 5)]
    path = write_particles_star(tmp_path / "p.star", names, [1, 1, 2, 2], pixel_size=1.1, ctf=ctf)
    optics = starfile.read(path, always_dict=True)["optics"]
    assert sorted(optics["rlnVoltage"].tolist()) == [200, 300]
    with ParticleStack.open(path) as stack:
        assert stack.pixel_size == pytest.approx(1.1)  # the star wins over the MRC header
        assert stack.ctf is not None
        for field in (
            "defocus_u",
            "defocus_v",
            "defocus_angle",
            "voltage",
            "spherical_aberration",
            "amplitude_contrast",
            "phase_shift",
        ):
            np.testing.assert_allclose(getattr(stack.ctf, field), getattr(ctf, field), atol=1e-5)


def test_star_with_two_stacks_and_relative_paths(make_mrc, tmp_path):
    _, a = make_mrc("job/Extract/a.mrcs", n=3, seed=1)
    _, b = make_mrc("job/Extract/b.mrcs", n=2, seed=2)
    names = [
        "000002@Extract/b.mrcs",
        "000003@Extract/a.mrcs",
        "000001@Extract/a.mrcs",
        "000001@Extract/b.mrcs",
    ]
    star = write_particles_star(tmp_path / "job" / "particles.star", names, pixel_size=1.25)
    with ParticleStack.open(star) as stack:
        assert stack.n == 4 and stack.box == 16
        assert stack.image_names == names
        assert [p.name for p in stack.files] == ["b.mrcs", "a.mrcs"]
        expected = np.stack([b[1], a[2], a[0], b[0]])
        np.testing.assert_array_equal(stack.read(), expected)
        np.testing.assert_array_equal(stack.read(1, 3), expected[1:3])
        np.testing.assert_array_equal(stack.read_indices([3, 0, 2]), expected[[3, 0, 2]])


def test_names_relative_to_another_folder(make_mrc, tmp_path):
    _, a = make_mrc("job/Extract/a.mrcs", n=3, seed=1)
    star = write_particles_star(tmp_path / "job" / "in.star", ["3@Extract/a.mrcs", "1@Extract/a.mrcs"])
    out = tmp_path / "results" / "run1"
    out.mkdir(parents=True)
    with ParticleStack.open(star) as stack:
        names = stack.image_names_relative_to(out)
        assert names == ["000003@../../job/Extract/a.mrcs", "000001@../../job/Extract/a.mrcs"]
        write_particles_star(out / "particles.star", names, [2, 1], stack.pixel_size)
    with ParticleStack.open(out / "particles.star") as copy:
        np.testing.assert_array_equal(copy.read(), a[[2, 0]])


def test_relion_project_layout(make_mrc, write_star, tmp_path):
    """RELION names are relative to the project folder, two levels above Select/job005/."""
    _, data = make_mrc("project/Extract/job003/mic1.mrcs", n=3)
    star = write_star(
        "project/Select/job005/particles.star",
        """
data_optics
loop_
_rlnOpticsGroup
_rlnImagePixelSize
1 0.9
data_particles
loop_
_rlnImageName
_rlnOpticsGroup
000003@Extract/job003/mic1.mrcs 1
000001@Extract/job003/mic1.mrcs:mrcs 1
""",
    )
    with ParticleStack.open(star) as stack:
        assert stack.pixel_size == pytest.approx(0.9)
        assert [p.name for p in stack.files] == ["mic1.mrcs"]
        np.testing.assert_array_equal(stack.read(), data[[2, 0]])


def test_flattened_copy_finds_stacks_beside_the_star(make_mrc, write_star):
    """An upload keeps file names but not RELION's folders."""
    _, data = make_mrc("upload/mic1.mrcs", n=2)
    star = write_star("upload/p.star", "data_\nloop_\n_rlnImageName\n2@Extract/job003/mic1.mrcs\n")
    with ParticleStack.open(star, confine_to=star.parent) as stack:
        assert stack.image_names == ["2@Extract/job003/mic1.mrcs"]
        np.testing.assert_array_equal(stack.read(), data[1:])


def test_old_style_star_with_ctf_in_particle_table(make_mrc, write_star):
    _, data = make_mrc("stack.mrcs", n=2, box=8)
    star = write_star(
        "old.star",
        """
data_
loop_
_rlnImageName #1
_rlnDefocusU #2
_rlnVoltage #3
_rlnSphericalAberration #4
_rlnAmplitudeContrast #5
_rlnDetectorPixelSize #6
_rlnMagnification #7
000002@stack.mrcs 15000.0 300 2.7 0.07 14.0 100000
000001@stack.mrcs 17000.0 300 2.7 0.07 14.0 100000
""",
    )
    with ParticleStack.open(star) as stack:
        assert stack.pixel_size == pytest.approx(1.4)
        np.testing.assert_array_equal(stack.read(), data[::-1])
        np.testing.assert_allclose(stack.ctf.defocus_u, [15000, 17000])
        np.testing.assert_allclose(stack.ctf.defocus_v, [15000, 17000])  # round CTF if no V
        np.testing.assert_allclose(stack.ctf.phase_shift, [0, 0])
        np.testing.assert_allclose(stack.ctf.amplitude_contrast, [0.07, 0.07])


def test_star_without_pixel_size_uses_mrc_header(make_mrc, write_star):
    make_mrc("s.mrcs", n=2, pixel_size=2.5)
    star = write_star("s.star", "data_\nloop_\n_rlnImageName\n1@s.mrcs\n2@s.mrcs\n")
    with ParticleStack.open(star) as stack:
        assert stack.pixel_size == pytest.approx(2.5) and stack.ctf is None and stack.mode == 2


@pytest.mark.parametrize("number", ["1e30", "1.5", "-3000000000"])
def test_class_numbers_that_are_not_whole_32_bit_numbers_are_refused(make_mrc, write_star, number):
    make_mrc("s.mrcs", n=2)
    star = write_star(
        "s.star", f"data_\nloop_\n_rlnImageName\n_rlnClassNumber\n1@s.mrcs 1\n2@s.mrcs {number}\n"
    )
    with pytest.raises(InputError, match=r"_rlnClassNumber must be whole numbers; row 2"):
        ParticleStack.open(star)


def test_star_image_without_index_is_a_single_image_file(make_mrc, write_star):
    _, image = make_mrc("one.mrc", data=np.full((8, 8), 7.0, np.float32))
    star = write_star("s.star", "data_\nloop_\n_rlnImageName\none.mrc\n")
    with ParticleStack.open(star) as stack:
        assert stack.n == 1 and stack.read()[0, 3, 3] == 7.0


def test_confine_to_rejects_references_outside(make_mrc, write_star, tmp_path):
    make_mrc("outside.mrcs", n=2)
    star = write_star("upload/p.star", "data_\nloop_\n_rlnImageName\n1@../outside.mrcs\n")
    with ParticleStack.open(star) as stack:  # the command line may read anywhere
        assert stack.n == 1
    with pytest.raises(InputError, match=r"outside\.mrcs, which is outside .*upload"):
        ParticleStack.open(star, confine_to=tmp_path / "upload")
    missing = write_star("upload/q.star", "data_\nloop_\n_rlnImageName\n1@/nonexistent/x.mrcs\n")
    with pytest.raises(InputError, match="outside"):  # refused before looking for it
        ParticleStack.open(missing, confine_to=tmp_path / "upload")
    with pytest.raises(InputError, match="p.star, which is outside"):
        ParticleStack.open(star, confine_to=tmp_path / "elsewhere")


def test_confine_to_rejects_a_link_that_leaves_the_folder(make_mrc, write_star, tmp_path):
    make_mrc("secret/real.mrcs", n=2)
    (tmp_path / "upload").mkdir()
    (tmp_path / "upload" / "link.mrcs").symlink_to(tmp_path / "secret" / "real.mrcs")
    star = write_star("upload/p.star", "data_\nloop_\n_rlnImageName\n1@link.mrcs\n")
    with pytest.raises(InputError, match="outside"):
        ParticleStack.open(star, confine_to=tmp_path / "upload")
    make_mrc("upload/inside.mrcs", n=2)
    inside = write_star("upload/q.star", "data_\nloop_\n_rlnImageName\n2@inside.mrcs\n")
    with ParticleStack.open(inside, confine_to=tmp_path / "upload") as stack:
        assert stack.n == 1
