"""Bad particle input: every case ends in one InputError line naming the file and the problem."""

from __future__ import annotations

from types import SimpleNamespace

import mrcfile
import numpy as np
import pytest
from PIL import Image

from worker.engine.errors import InputError
from worker.engine.io import ParticleStack

NZ_OFFSET, ISPG_OFFSET = 8, 88


def missing_file(env):
    return env.tmp / "nothing.mrcs", "nothing.mrcs: file not found"


def not_an_mrc(env):
    path = env.tmp / "notes.mrcs"
    path.write_text("these are my particle notes\n" * 100)
    return path, "notes.mrcs: not an MRC file"


def shorter_than_header(env):
    path = env.tmp / "tiny.mrcs"
    path.write_bytes(b"\0" * 100)
    return path, "tiny.mrcs: not an MRC file .*100 bytes"


def truncated(env):
    path, _ = env.make_mrc("cut.mrcs", n=10, box=16)
    path.write_bytes(path.read_bytes()[:-500])
    return path, "cut.mrcs: truncated: the header promises 10 images"


def absurd_nz(env):
    path, _ = env.make_mrc("absurd.mrcs", n=2, box=16)
    env.patch_header(path, NZ_OFFSET, "i", 10**9)
    return path, "absurd.mrcs: truncated: the header promises 1000000000 images"


def volume(env):
    path, _ = env.make_mrc("map.mrc", n=8, box=8, stack=False)
    return path, r"map.mrc: is a 3-D volume \(nz = 8, ispg = 1\)"


def volume_in_folder(env):
    env.make_mrc("maps/a.mrcs", n=2, box=8)
    env.make_mrc("maps/b.mrc", n=8, box=8, stack=False)
    return env.tmp / "maps", "b.mrc: is a 3-D volume"


def empty_stack(env):
    path, _ = env.make_mrc("empty.mrcs", n=1, box=8)
    env.patch_header(path, NZ_OFFSET, "i", 0)
    return path, r"empty.mrcs: the stack is empty \(nz = 0\)"


def complex_mode(env):
    path, _ = env.make_mrc("complex.mrcs", n=2, box=8, data=np.zeros((2, 8, 8), np.complex64))
    return path, r"complex.mrcs: unsupported MRC mode 4 \(complex float32\)"


def not_square(env):
    path, _ = env.make_mrc("wide.mrcs", n=2, box=20, ny=16)
    return path, "wide.mrcs: images are 20 x 16; particles must be square"


def mismatched_boxes(env):
    env.make_mrc("mixed/a.mrcs", n=2, box=16)
    env.make_mrc("mixed/b.mrcs", n=2, box=24)
    return env.tmp / "mixed", "mixed: box sizes differ: a.mrcs is 16 px, b.mrcs is 24 px"


def mismatched_pictures(env):
    folder = env.tmp / "pics"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "b.png")
    return folder, "box sizes differ: a.png is 16 px, b.png is 32 px"


def broken_picture(env):
    folder = env.tmp / "pics"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder, r"a.png: not a readable image \(unknown or damaged format\)"


def empty_folder(env):
    (env.tmp / "void").mkdir()
    return env.tmp / "void", "void: no .mrcs/.mrc stacks or .png/.jpg/.tif images"


def star_past_end(env):
    env.make_mrc("s.mrcs", n=3)
    path = env.write_star("p.star", "data_\nloop_\n_rlnImageName\n000001@s.mrcs\n000004@s.mrcs\n")
    return path, r"p.star: row 2 \(000004@s.mrcs\) points past the end of .*s.mrcs, which holds 3 images"


def star_index_zero(env):
    env.make_mrc("s.mrcs", n=3)
    path = env.write_star("p.star", "data_\nloop_\n_rlnImageName\n000000@s.mrcs\n")
    return path, r"p.star: row 1 \(000000@s.mrcs\): image numbers start at 1"


def star_without_image_name(env):
    path = env.write_star("p.star", "data_particles\nloop_\n_rlnDefocusU\n10000\n")
    return path, r"p.star: no _rlnImageName column in any data block \(blocks: data_particles\)"


def star_missing_stack(env):
    path = env.write_star("p.star", "data_\nloop_\n_rlnImageName\n000001@gone.mrcs\n")
    return path, "p.star: row 1 refers to gone.mrcs, which is not found beside p.star"


def star_bad_index(env):
    env.make_mrc("s.mrcs", n=3)
    path = env.write_star("p.star", "data_\nloop_\n_rlnImageName\nabc@s.mrcs\n")
    return path, "p.star: row 1: cannot read image name 'abc@s.mrcs'"


def star_no_rows(env):
    path = env.write_star("p.star", "data_particles\nloop_\n_rlnImageName\n")
    return path, "p.star: the particle table lists no particles"


def star_not_a_star(env):
    path = env.tmp / "p.star"
    path.write_bytes(bytes(range(256)) * 4)
    return path, "p.star: not a (readable )?STAR file"


def star_defocus_without_voltage(env):
    env.make_mrc("s.mrcs", n=1)
    path = env.write_star("p.star", "data_\nloop_\n_rlnImageName\n_rlnDefocusU\n1@s.mrcs 12000\n")
    return path, "p.star: has _rlnDefocusU but no _rlnVoltage, _rlnSphericalAberration"


def star_mixed_pixel_sizes(env):
    env.make_mrc("s.mrcs", n=2)
    path = env.write_star(
        "p.star", "data_\nloop_\n_rlnImageName\n_rlnImagePixelSize\n1@s.mrcs 1.0\n2@s.mrcs 2.0\n"
    )
    return path, r"p.star: particles have different pixel sizes \(1 to 2 Å\)"


def star_unknown_optics_group(env):
    env.make_mrc("s.mrcs", n=2)
    path = env.write_star(
        "p.star",
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n"
        "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@s.mrcs 2\n",
    )
    return path, r"p.star: particles refer to optics group\(s\) \[2\] not in data_optics"


CASES = [
    missing_file,
    not_an_mrc,
    shorter_than_header,
    truncated,
    absurd_nz,
    volume,
    volume_in_folder,
    empty_stack,
    complex_mode,
    not_square,
    mismatched_boxes,
    mismatched_pictures,
    broken_picture,
    empty_folder,
    star_past_end,
    star_index_zero,
    star_without_image_name,
    star_missing_stack,
    star_bad_index,
    star_no_rows,
    star_not_a_star,
    star_defocus_without_voltage,
    star_mixed_pixel_sizes,
    star_unknown_optics_group,
]


@pytest.fixture
def env(tmp_path, make_mrc, patch_header, write_star):
    return SimpleNamespace(tmp=tmp_path, make_mrc=make_mrc, patch_header=patch_header, write_star=write_star)


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.replace("_", "-") for c in CASES])
def test_bad_input_is_one_clear_line(env, case):
    path, pattern = case(env)
    with pytest.raises(InputError, match=pattern) as caught:
        ParticleStack.open(path)
    message = str(caught.value)
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)  # the CLI prints ValueErrors as one line


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "minus-inf"])
def test_non_finite_values_reported_at_read_time(make_mrc, bad_value):
    data = np.zeros((6, 8, 8), np.float32)
    data[4, 2, 3] = bad_value
    path, _ = make_mrc("nan.mrcs", data=data)
    with ParticleStack.open(path) as stack:
        assert stack.read(0, 4).shape == (4, 8, 8)  # the good part still reads
        pattern = r"nan.mrcs: image 5 \(particle index 4\) contains NaN or Inf values"
        with pytest.raises(InputError, match=pattern):
            stack.read()
        with pytest.raises(InputError, match=pattern):
            stack.read_indices([1, 4])
        with pytest.raises(InputError, match=pattern):
            stack.check_finite(chunk_size=2)


def test_check_finite_passes_clean_float16(make_mrc):
    path, _ = make_mrc("half.mrcs", n=9, dtype=np.float16)
    with ParticleStack.open(path) as stack:
        assert stack.check_finite(chunk_size=4) is None


def test_non_finite_in_second_stack_of_a_star(make_mrc, write_star):
    make_mrc("a.mrcs", n=2)
    data = np.zeros((3, 16, 16), np.float32)
    data[1, 0, 0] = np.nan
    make_mrc("b.mrcs", data=data)
    star = write_star("p.star", "data_\nloop_\n_rlnImageName\n1@a.mrcs\n2@b.mrcs\n2@a.mrcs\n")
    with ParticleStack.open(star) as stack:
        with pytest.raises(InputError, match=r"b.mrcs: image 2 \(particle index 1\)"):
            stack.read()


def test_old_file_without_map_id_is_still_read(make_mrc):
    """Pre-2014 writers left out 'MAP ': read such a file when the rest of the header is sound."""
    path, data = make_mrc("old.mrcs", n=3, box=8)
    with open(path, "r+b") as handle:
        handle.seek(208)
        handle.write(b"\0\0\0\0")
    with pytest.raises(ValueError, match="Map ID string not found"):
        mrcfile.open(path).close()  # the strict reader refuses it
    with ParticleStack.open(path) as stack:
        np.testing.assert_array_equal(stack.read(), data)
