"""ParticleStack on MRC stacks, folders and pictures; write_stack round trips."""

from __future__ import annotations

import io
import pickle

import mrcfile
import numpy as np
import pytest
from PIL import Image

from worker.engine.io import ParticleStack, write_stack
from worker.engine.io import particles as particles_module

MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}


def test_write_stack_round_trip(tmp_path):
    images = np.random.default_rng(1).normal(size=(7, 24, 24)).astype(np.float32)
    path = write_stack(tmp_path / "out.mrcs", images, pixel_size=1.7)

    report = io.StringIO()
    assert mrcfile.validate(str(path), print_file=report), report.getvalue()
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == 2
        assert int(mrc.header.nz) == 7 and mrc.is_image_stack()
        assert mrc.voxel_size.x == pytest.approx(1.7) and mrc.voxel_size.z == pytest.approx(1.7)
    with ParticleStack.open(path) as stack:
        assert (len(stack), stack.n, stack.box, stack.mode) == (7, 7, 24, 2)
        assert stack.pixel_size == pytest.approx(1.7)
        np.testing.assert_array_equal(stack.read(), images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrcs"]  # no temporary left


def test_write_stack_single_image_and_overwrite(tmp_path):
    path = tmp_path / "one.mrcs"
    write_stack(path, np.zeros((3, 8, 8), np.float32), 1.0)
    write_stack(path, np.ones((8, 8), np.float64), 2.0)
    with ParticleStack.open(path) as stack:
        assert (stack.n, stack.pixel_size) == (1, 2.0)
        assert stack.read().dtype == np.float32 and stack.read().max() == 1.0


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 8, 8)), np.zeros(8), np.zeros((2, 2, 8, 8))], ids=["no-images", "1-d", "4-d"]
)
def test_write_stack_rejects_bad_shapes(tmp_path, bad):
    with pytest.raises(ValueError, match="expected images shaped"):
        write_stack(tmp_path / "bad.mrcs", bad, 1.0)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mode", sorted(MODES), ids=[f"mode{m}" for m in sorted(MODES)])
def test_every_mode_reads_as_float32(make_mrc, mode):
    path, data = make_mrc(f"m{mode}.mrcs", n=5, box=12, dtype=MODES[mode])
    with ParticleStack.open(path) as stack:
        assert stack.mode == mode
        images = stack.read()
        assert images.dtype == np.float32 and images.shape == (5, 12, 12)
        np.testing.assert_array_equal(images, data.astype(np.float32))


def test_big_endian_file(make_mrc):
    path, data = make_mrc("big.mrcs", n=3, box=10, data=np.arange(300, dtype=">f4").reshape(3, 10, 10))
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode.dtype.byteorder == ">"
    with ParticleStack.open(path) as stack:
        np.testing.assert_array_equal(stack.read(), data.astype(np.float32))
        assert stack.pixel_size == pytest.approx(1.25)


def test_reads_ranges_indices_and_chunks(make_mrc):
    path, data = make_mrc(n=10, box=8)
    with ParticleStack.open(path) as stack:
        np.testing.assert_array_equal(stack.read(3, 7), data[3:7])
        assert stack.read(4, 4).shape == (0, 8, 8)
        np.testing.assert_array_equal(stack.read_indices([9, 0, 4, 4]), data[[9, 0, 4, 4]])
        np.testing.assert_array_equal(stack.read_indices(np.array([2, 3, 4])), data[2:5])
        chunks = list(stack.chunks(4))
        assert [start for start, _ in chunks] == [0, 4, 8]
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), data)
        with pytest.raises(IndexError, match=r"read\(5, 11\) is outside 0..10"):
            stack.read(5, 11)
        with pytest.raises(IndexError, match="particle index 10 is outside 0..9"):
            stack.read_indices([10])


def test_describes_itself(make_mrc, tmp_path):
    path, _ = make_mrc("sub/p.mrcs", n=3)
    with ParticleStack.open(path) as stack:
        assert stack.source == path and stack.files == [path]
        assert stack.image_names == ["000001@p.mrcs", "000002@p.mrcs", "000003@p.mrcs"]
        assert stack.ctf is None
        assert "n=3" in repr(stack)


def test_mrc_single_image_and_mrc_stack(make_mrc):
    single, image = make_mrc("one.mrc", data=np.full((9, 9), 3.0, np.float32))
    stack_path, data = make_mrc("stack.mrc", n=4, box=9, stack=True)
    with ParticleStack.open(single) as stack:
        assert stack.n == 1 and stack.read()[0, 0, 0] == 3.0
    with ParticleStack.open(stack_path) as stack:
        np.testing.assert_array_equal(stack.read(), data)


def test_mrcs_is_a_stack_even_with_volume_header(make_mrc):
    path, data = make_mrc("vol_header.mrcs", n=4, box=8, stack=False)
    with ParticleStack.open(path) as stack:
        np.testing.assert_array_equal(stack.read(), data)


def test_folder_of_stacks_in_natural_order(make_mrc, tmp_path):
    _, second = make_mrc("data/part10.mrcs", n=2, seed=2)
    _, first = make_mrc("data/part2.mrcs", n=3, seed=1)
    (tmp_path / "data" / "notes.txt").write_text("ignored")
    with ParticleStack.open(tmp_path / "data") as stack:
        assert stack.n == 5
        assert [p.name for p in stack.files] == ["part2.mrcs", "part10.mrcs"]
        assert stack.image_names[2:4] == ["000003@part2.mrcs", "000001@part10.mrcs"]
        np.testing.assert_array_equal(stack.read(), np.concatenate([first, second]))
        np.testing.assert_array_equal(stack.read_indices([4, 0]), np.stack([second[1], first[0]]))


def test_folder_of_pictures(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 255, size=(3, 20, 20), dtype=np.uint8)
    for i, pixels in enumerate(grey):
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    deep = rng.integers(0, 60000, size=(20, 20)).astype(np.uint16)
    Image.fromarray(deep).save(folder / "img3.tif")
    Image.fromarray(np.stack([grey[0]] * 3, axis=-1)).save(folder / "img4.png")  # RGB
    with ParticleStack.open(folder) as stack:
        assert (stack.n, stack.box, stack.mode, stack.pixel_size) == (5, 20, None, 1.0)
        assert stack.image_names == ["img0.png", "img1.png", "img2.png", "img3.tif", "img4.png"]
        images = stack.read()
        assert images.dtype == np.float32
        np.testing.assert_array_equal(images[:3], grey.astype(np.float32))
        np.testing.assert_array_equal(images[3], deep.astype(np.float32))
        np.testing.assert_allclose(images[4], grey[0], atol=1)
    with ParticleStack.open(folder / "img1.png") as one:
        np.testing.assert_array_equal(one.read()[0], grey[1])


def test_many_stacks_keep_few_files_open(make_mrc, tmp_path):
    datas = [make_mrc(f"many/s{i:02d}.mrcs", n=2, box=6, seed=i)[1] for i in range(8)]
    expected = np.concatenate(datas)
    with ParticleStack.open(tmp_path / "many") as stack:
        stack.max_open_files = 3
        order = np.random.default_rng(0).permutation(16)
        np.testing.assert_array_equal(stack.read_indices(order), expected[order])
        assert len(stack._open) == 3
        np.testing.assert_array_equal(stack.read(), expected)
        assert len(stack._open) == 3
    assert particles_module.MAX_OPEN_FILES >= 16


def test_close_pickle_and_reopen(make_mrc):
    path, data = make_mrc(n=4)
    stack = ParticleStack.open(path)
    stack.read(0, 1)
    copy = pickle.loads(pickle.dumps(stack))
    np.testing.assert_array_equal(copy.read(), data)
    stack.close()
    assert not stack._open
    np.testing.assert_array_equal(stack.read(1, 2), data[1:2])  # maps open again on demand
    stack.close()
    copy.close()
