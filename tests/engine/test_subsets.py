"""Clean and reclassify in the engine: a stack restricted to some particles, `classify --classes`
on a previous run's particles.star, stable uids and .cs export of any input, and whether the
pixel size is known."""

from __future__ import annotations

import numpy as np
import pytest
import starfile
from cryosparc.dataset import Dataset

from cryoclust.cli import main
from worker.engine.ctf import CtfParams
from worker.engine.errors import InputError
from worker.engine.io.cryosparc import stable_uids, write_stack_cs
from worker.engine.io.particles import ParticleStack
from worker.engine.io.star import write_particles_star


def _star_dataset(tmp_path, make_mrc):
    _, a = make_mrc("up/a.mrcs", n=5, box=16, seed=1, pixel_size=1.0)
    _, b = make_mrc("up/b.mrcs", n=4, box=16, seed=2, pixel_size=1.0)
    names = [f"{i:06d}@a.mrcs" for i in range(1, 6)] + [f"{i:06d}@b.mrcs" for i in range(1, 5)]
    defocus = np.arange(9, dtype=float) * 1000 + 10000
    ctf = CtfParams.uniform(defocus)
    star = write_particles_star(
        tmp_path / "up" / "p.star",
        names,
        np.array([1, 2, 3, 1, 2, 3, 1, 2, 3]),
        pixel_size=1.5,
        ctf=ctf,
        image_size=16,
    )
    return star, np.concatenate([a, b]), names, defocus


def test_a_subset_reads_exactly_its_particles_with_their_names_ctf_and_places(tmp_path, make_mrc):
    star, images, names, defocus = _star_dataset(tmp_path, make_mrc)
    chosen = [7, 0, 5, 6]
    with ParticleStack.open(star) as stack:
        part = stack.subset(chosen)
        assert len(part) == 4 and part.box == 16 and part.pixel_size == pytest.approx(1.5)
        np.testing.assert_array_equal(part.read(), images[chosen])
        np.testing.assert_array_equal(part.read_indices([3, 1]), images[[6, 0]])
        assert part.image_names == [names[i] for i in chosen]
        np.testing.assert_allclose(part.ctf.defocus_u, defocus[chosen])
        np.testing.assert_array_equal(part.class_numbers, [2, 1, 3, 1])
        np.testing.assert_array_equal(part.indices, chosen)
        # A subset of a subset still knows where its particles are in the file.
        np.testing.assert_array_equal(part.subset([2, 0]).indices, [5, 7])
        with pytest.raises(InputError, match="particle index 9 is outside 0..8"):
            stack.subset([1, 9])


@pytest.mark.parametrize(
    ("header", "known"), [(0.0, False), (1.0, False), (2.5, True)], ids=["unset", "default", "set"]
)
def test_pixel_size_is_unknown_when_the_header_is_unset_or_left_at_one(tmp_path, make_mrc, header, known):
    path, _ = make_mrc("p.mrcs", pixel_size=header)
    with ParticleStack.open(path) as stack:
        assert stack.pixel_size_known is known
        assert stack.pixel_size == (header or 1.0)
        stack.set_pixel_size(1.06)
        assert (stack.pixel_size, stack.pixel_size_known) == (1.06, True)
        with pytest.raises(InputError, match="pixel size must be a positive number"):
            stack.set_pixel_size(0.0)


def test_a_star_column_of_one_angstrom_counts_as_known(tmp_path, make_mrc):
    make_mrc("s.mrcs", n=2, pixel_size=0.0)
    star = write_particles_star(tmp_path / "s.star", ["000001@s.mrcs", "000002@s.mrcs"], pixel_size=1.0)
    with ParticleStack.open(star) as stack:
        assert stack.pixel_size_known is True


def test_stable_uids_are_the_same_every_time_and_differ_between_datasets():
    first = stable_uids("dataset-a", np.arange(5))
    assert first.dtype == np.uint64 and len(set(first.tolist())) == 5
    np.testing.assert_array_equal(first, stable_uids("dataset-a", np.arange(5)))
    np.testing.assert_array_equal(first[[3, 1]], stable_uids("dataset-a", np.array([3, 1])))
    assert not set(first.tolist()) & set(stable_uids("dataset-b", np.arange(5)).tolist())


def test_a_star_input_exports_as_cs_with_stable_uids(tmp_path, make_mrc):
    star, images, _, defocus = _star_dataset(tmp_path, make_mrc)
    with ParticleStack.open(star) as stack:
        part = stack.subset([8, 2])
        out = write_stack_cs(tmp_path / "up" / "chosen.cs", part, part.image_names, "key", np.array([3, 1]))
    back = Dataset.load(str(out))
    np.testing.assert_array_equal(back["uid"], stable_uids("key", np.array([8, 2])))
    assert list(back["blob/path"]) == ["b.mrcs", "a.mrcs"]
    np.testing.assert_array_equal(back["blob/idx"], [3, 2])
    np.testing.assert_array_equal(back["alignments2D/class"], [2, 0])
    np.testing.assert_allclose(back["ctf/df1_A"], defocus[[8, 2]])
    with ParticleStack.open(out) as again:
        np.testing.assert_array_equal(again.read(), images[[8, 2]])


def test_classify_classes_reclassifies_exactly_the_chosen_particles(tmp_path, make_mrc, capsys):
    star, _, names, _ = _star_dataset(tmp_path, make_mrc)
    out = tmp_path / "again"
    argv = [
        "classify",
        str(star),
        "--classes",
        "3,1",
        "-o",
        str(out),
        "-c",
        "2",
        "-e",
        "1",
        "-r",
        "1",
        "-g",
        "cpu",
        "--size",
        "16",
        "-b",
        "4",
        "-q",
        "--apix",
        "1.25",
    ]
    assert main(argv) == 0
    assert "6 particles (classes 1,3 of 9)" in capsys.readouterr().out
    written = starfile.read(out / "particles.star", always_dict=True)["particles"]
    kept = [names[i] for i in (0, 2, 3, 5, 6, 8)]
    assert [n.replace("../up/", "") for n in written["rlnImageName"]] == kept
    summary = (out / "summary.json").read_text()
    assert '"particles": 6' in summary and '"pixel_size": 1.25' in summary


def test_classify_classes_needs_class_numbers(tmp_path, make_mrc):
    path, _ = make_mrc("plain.mrcs")
    argv = ["classify", str(path), "--classes", "1", "-o", str(tmp_path / "o"), "-g", "cpu"]
    assert main(argv) != 0
