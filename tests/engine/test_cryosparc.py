"""cryoSPARC .cs particle files: read with their stacks, written back, round trips through
cryosparc-tools (the library cryoSPARC itself maintains)."""

from __future__ import annotations

import numpy as np
import pytest
from cryosparc.dataset import Dataset

from cryoclust.cli import main
from worker.engine.ctf import CtfParams
from worker.engine.errors import InputError
from worker.engine.io.cryosparc import write_particles_cs
from worker.engine.io.particles import ParticleStack

# A run of a few seconds: 2 classes, 1 epoch, 1 round, 16 px, on the CPU.
TINY_RUN = ["-c", "2", "-e", "1", "-r", "1", "-g", "cpu", "--size", "16", "-b", "4", "-q", "--no-umap"]


def _cs_project(tmp_path, make_mrc, imported: bool = False):
    """A cryoSPARC-like project: two extracted stacks under P1/J3/extract/ and a particle file
    P1/J5/particles.cs naming them relative to the project folder, rows interleaved."""
    _, first = make_mrc("P1/J3/extract/mic1_particles.mrc", n=4, box=16, seed=1)
    _, second = make_mrc("P1/J3/extract/mic2_particles.mrc", n=3, box=16, seed=2)
    rows = [("mic1", 2), ("mic2", 0), ("mic1", 0), ("mic2", 2), ("mic1", 3)]
    data = Dataset.allocate(
        len(rows),
        [
            ("blob/path", "O"),
            ("blob/idx", "u4"),
            ("blob/shape", "u4", (2,)),
            ("blob/psize_A", "f4"),
            ("ctf/accel_kv", "f4"),
            ("ctf/cs_mm", "f4"),
            ("ctf/amp_contrast", "f4"),
            ("ctf/df1_A", "f4"),
            ("ctf/df2_A", "f4"),
            ("ctf/df_angle_rad", "f4"),
            ("ctf/phase_shift_rad", "f4"),
        ],
    )
    mark = ">" if imported else ""
    data["blob/path"] = [f"{mark}J3/extract/{name}_particles.mrc" for name, _ in rows]
    data["blob/idx"] = [k for _, k in rows]
    data["blob/shape"] = np.array([16, 16])
    data["blob/psize_A"] = 1.7
    data["ctf/accel_kv"], data["ctf/cs_mm"], data["ctf/amp_contrast"] = 300.0, 2.7, 0.07
    data["ctf/df1_A"] = [12000.0, 15000.0, 18000.0, 21000.0, 24000.0]
    data["ctf/df2_A"] = data["ctf/df1_A"] - 300.0
    data["ctf/df_angle_rad"] = np.pi / 4
    cs = tmp_path / "P1" / "J5" / "particles.cs"
    cs.parent.mkdir(parents=True)
    data.save(str(cs))
    expected = np.stack([(first if name == "mic1" else second)[k] for name, k in rows])
    return cs, data, expected


@pytest.mark.parametrize("imported", [False, True], ids=["extracted", "imported"])
def test_a_cs_file_opens_with_its_stacks_pixel_size_ctf_and_uids(tmp_path, make_mrc, imported):
    cs, data, expected = _cs_project(tmp_path, make_mrc, imported)
    with ParticleStack.open(cs) as stack:
        assert (len(stack), stack.box) == (5, 16)
        assert stack.pixel_size == pytest.approx(1.7)
        np.testing.assert_array_equal(stack.read(), expected)
        np.testing.assert_array_equal(stack.uids, data["uid"])
        assert stack.image_names[0] == "000003@J3/extract/mic1_particles.mrc"  # 1-based, as RELION
        assert stack.ctf.defocus_u[1] == pytest.approx(15000.0)
        assert stack.ctf.defocus_v[1] == pytest.approx(14700.0)
        assert stack.ctf.defocus_angle[0] == pytest.approx(45.0)  # radians in .cs, degrees here
        assert stack.ctf.amplitude_contrast[0] == pytest.approx(0.07)


def test_a_cs_file_without_blob_fields_is_refused_by_name(tmp_path):
    data = Dataset.allocate(3, [("ctf/df1_A", "f4")])
    path = tmp_path / "picks.cs"
    data.save(str(path))
    with pytest.raises(InputError, match=r"picks.cs: has no blob/path, blob/idx field"):
        ParticleStack.open(path)


def test_a_row_past_the_end_of_its_stack_is_refused(tmp_path, make_mrc):
    cs, data, _ = _cs_project(tmp_path, make_mrc)
    data["blob/idx"][3] = 3  # mic2 holds 3 images: 0..2
    data.save(str(cs))
    with pytest.raises(
        InputError, match=r"row 4 \(000004@J3/extract/mic2_particles.mrc\) points past the end"
    ):
        ParticleStack.open(cs)


def test_a_damaged_cs_file_is_one_readable_error(tmp_path):
    path = tmp_path / "broken.cs"
    path.write_bytes(b"not a numpy file")
    with pytest.raises(InputError, match=r"broken.cs: not a readable cryoSPARC .cs file"):
        ParticleStack.open(path)


def test_written_cs_round_trips_through_cryosparc_tools(tmp_path, make_mrc):
    cs, data, expected = _cs_project(tmp_path, make_mrc)
    stack = ParticleStack.open(cs)
    out = tmp_path / "P1" / "J5" / "classified.cs"
    paths = [name.partition("@")[2] for name in stack.image_names]
    frames = np.array([int(name.partition("@")[0]) - 1 for name in stack.image_names])
    write_particles_cs(
        out,
        stack.uids,
        paths,
        frames,
        stack.box,
        stack.pixel_size,
        classes=np.array([2, 1, 2, 3, 1]),
        ctf=stack.ctf,
    )
    back = Dataset.load(str(out))
    np.testing.assert_array_equal(back["uid"], data["uid"])
    np.testing.assert_array_equal(back["alignments2D/class"], [1, 0, 1, 2, 0])  # 0-based there
    assert list(back["blob/path"]) == list(data["blob/path"])
    np.testing.assert_allclose(back["ctf/df_angle_rad"], data["ctf/df_angle_rad"], rtol=1e-6)
    with ParticleStack.open(out) as again:
        np.testing.assert_array_equal(again.read(), expected)
        np.testing.assert_array_equal(again.uids, data["uid"])


def test_class_numbers_must_start_at_one(tmp_path):
    ctf = CtfParams.uniform(np.full(2, 10000.0))
    with pytest.raises(ValueError, match="class numbers must be given for every particle, from 1"):
        write_particles_cs(
            tmp_path / "x.cs",
            np.arange(2, dtype=np.uint64),
            ["a.mrc"] * 2,
            np.arange(2),
            16,
            1.0,
            classes=np.array([0, 1]),
            ctf=ctf,
        )


def test_classify_command_reads_a_cs_file(tmp_path, make_mrc, capsys):
    cs, _, _ = _cs_project(tmp_path, make_mrc)
    out = tmp_path / "run"
    assert main(["classify", str(cs), "-o", str(out), *TINY_RUN]) == 0
    assert (out / "particles.star").is_file()
    assert "000003@" in (out / "particles.star").read_text()
    assert "particles.cs" in capsys.readouterr().out


def test_classify_command_writes_particles_cs_for_a_cs_input(tmp_path, make_mrc):
    """particles.cs beside particles.star: the input's uids, blob paths that resolve from OUT,
    and the classes of particles.star in alignments2D/class (0-based there)."""
    import starfile

    cs, data, expected = _cs_project(tmp_path, make_mrc, imported=True)
    out = tmp_path / "run"
    assert main(["classify", str(cs), "-o", str(out), *TINY_RUN]) == 0
    back = Dataset.load(str(out / "particles.cs"))
    np.testing.assert_array_equal(back["uid"], data["uid"])
    star_classes = starfile.read(out / "particles.star", always_dict=True)["particles"]["rlnClassNumber"]
    np.testing.assert_array_equal(back["alignments2D/class"], star_classes.to_numpy() - 1)
    assert back["blob/psize_A"][0] == pytest.approx(1.7)
    with ParticleStack.open(out / "particles.cs") as again:
        np.testing.assert_array_equal(again.read(), expected)
