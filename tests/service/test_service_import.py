"""Import by server path: only files under CRYOCLUST_IMPORT_ROOTS, read in place (never copied),
every way out of the roots refused with a reason, and jobs that fail with a reason when the files
changed or vanished after the import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.api import running_api, wait_for_job
from support.settings import make_settings
from support.stacks import write_stack

from worker.engine.io.star import write_particles_star

TINY = {
    "cluster_num": 3,
    "epoch_num": 1,
    "round_num": 1,
    "batch_size": 16,
    "size": 16,
    "device": "cpu",
    "umap": False,
}


def lab_storage(tmp_path: Path) -> tuple[Path, Path]:
    """A RELION project under the import root `lab`, and a folder `elsewhere` beside it with
    ways into it from inside the root: a linked file, a linked folder, a star whose stack links out."""
    root, outside = tmp_path / "lab", tmp_path / "elsewhere"
    extract = root / "project" / "Extract" / "job003"
    write_stack(extract / "a.mrcs", n=30, box=16, seed=1)
    write_stack(extract / "b.mrcs", n=30, box=16, seed=2)
    (root / "project" / "Select" / "job010").mkdir(parents=True)
    names = [f"{i:06d}@Extract/job003/{s}.mrcs" for s in ("a", "b") for i in range(1, 31)]
    write_particles_star(
        root / "project" / "Select" / "job010" / "particles.star", names, pixel_size=2.0, image_size=16
    )
    for name in ("c", "d", "e"):
        write_stack(root / f"{name}.mrcs", n=30, box=16, seed=3)
    write_stack(outside / "secret.mrcs", n=5, box=16)
    (root / "link.mrcs").symlink_to(outside / "secret.mrcs")
    (root / "linked-folder").symlink_to(outside, target_is_directory=True)
    (root / "out.mrcs").symlink_to(outside / "secret.mrcs")
    write_particles_star(root / "leaky.star", ["000001@out.mrcs"], pixel_size=2.0, image_size=16)
    (root / "notes.txt").write_text("not particles\n")
    return root, outside


def refusals(root: Path, outside: Path) -> dict[str, tuple[str, int, str]]:
    """case -> (path asked for, status, words the answer must contain)."""
    return {
        "dotdot-out": (f"{root}/../elsewhere/secret.mrcs", 403, "'..' is not allowed"),
        "dotdot-inside": (f"{root}/project/../c.mrcs", 403, "'..' is not allowed"),
        "relative": ("project/Select/job010/particles.star", 422, "absolute path"),
        "absolute-elsewhere": (str(outside / "secret.mrcs"), 403, "outside the import roots"),
        "system-file": ("/etc/passwd", 403, "outside the import roots"),
        "symlink-out": (str(root / "link.mrcs"), 403, "symbolic link"),
        "symlinked-folder-out": (str(root / "linked-folder" / "secret.mrcs"), 403, "symbolic link"),
        "star-whose-stack-links-out": (str(root / "leaky.star"), 400, "outside"),
        "missing": (str(root / "nothing.mrcs"), 404, "no such file"),
        "folder": (str(root / "project"), 422, "folder"),
        "not-particles": (str(root / "notes.txt"), 415, "not a particle file"),
    }


def test_import_refuses_every_path_outside_the_roots_with_a_reason(tmp_path):
    root, outside = lab_storage(tmp_path)
    with running_api(make_settings(tmp_path / "data")) as api, api.client() as client:
        off = client.post("/api/datasets/import", json={"path": str(root / "c.mrcs")})
        assert off.status_code == 403 and "CRYOCLUST_IMPORT_ROOTS" in off.json()["detail"]
    with running_api(make_settings(tmp_path / "data2", IMPORT_ROOTS=[root])) as api, api.client() as client:
        for case, (path, status, words) in refusals(root, outside).items():
            response = client.post("/api/datasets/import", json={"path": path})
            assert response.status_code == status, (case, response.text)
            assert words in response.json()["detail"], (case, response.json())
        assert client.get("/api/datasets").json() == []


def test_imported_files_are_read_in_place_and_jobs_fail_when_they_change_or_vanish(tmp_path, db_url, workers):
    root, _ = lab_storage(tmp_path)
    star = root / "project" / "Select" / "job010" / "particles.star"
    settings = make_settings(tmp_path / "data", DATABASE_URL=db_url, IMPORT_ROOTS=[root])
    with running_api(settings) as api, api.client() as client:
        workers(settings)
        response = client.post("/api/datasets/import", json={"path": str(star), "name": "select 10"})
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert (dataset["name"], dataset["n_particles"], dataset["box_size"]) == ("select 10", 60, 16)
        assert dataset["imported_from"] == str(star.resolve())
        assert dataset["files"] == [
            "project/Select/job010/particles.star",
            "project/Extract/job003/a.mrcs",
            "project/Extract/job003/b.mrcs",
        ]
        assert not (api.data_dir / "datasets" / dataset["id"]).exists(), "registered, not copied"
        assert client.get(f"/api/datasets/{dataset['id']}/particles/59.png").status_code == 200

        first = job = client.post("/api/jobs", json={"dataset_id": dataset["id"], **TINY}).json()
        done = wait_for_job(client, job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert done["effective_params"]["mask_diameter"] > 0  # decided from the stack's box
        labels = client.get(f"/api/jobs/{job['id']}/rounds/final/labels.csv").text.splitlines()
        assert len(labels) == 61 and "Extract/job003/b.mrcs" in labels[-1]

        imported = {
            name: client.post("/api/datasets/import", json={"path": str(root / f"{name}.mrcs")}).json()
            for name in ("c", "d", "e")
        }
        # c: the same size, other bytes, a later mtime. d: grown. e: gone.
        c = root / "c.mrcs"
        write_stack(c, n=30, box=16, seed=9)
        later = c.stat().st_mtime_ns + 5_000_000_000
        os.utime(c, ns=(later, later))
        with open(root / "d.mrcs", "ab") as grown:
            grown.write(b"\0" * 1024)
        (root / "e.mrcs").unlink()
        expected = {
            "c": "c.mrcs changed after import (modified",
            "d": "d.mrcs changed after import (",
            "e": "e.mrcs vanished after import",
        }
        for name, words in expected.items():
            job = client.post("/api/jobs", json={"dataset_id": imported[name]["id"], **TINY}).json()
            failed = wait_for_job(client, job["id"], timeout=60)
            assert failed["status"] == "failed" and words in failed["error"], (name, failed)
            # recorded before the stack was opened; the mask diameter it would decide stays auto
            effective = failed["effective_params"]
            assert effective["device"] == "cpu" and effective["mask_diameter"] is None, (name, effective)

        # A stack of the star vanishes: its job fails naming that stack; deleting the dataset
        # leaves the lab's remaining files alone.
        (root / "project" / "Extract" / "job003" / "b.mrcs").unlink()
        job = client.post("/api/jobs", json={"dataset_id": dataset["id"], **TINY}).json()
        failed = wait_for_job(client, job["id"], timeout=60)
        assert failed["status"] == "failed" and "job003/b.mrcs vanished after import" in failed["error"], (
            failed
        )
        export = client.get(f"/api/jobs/{first['id']}/particles.cs")
        assert export.status_code == 409 and "b.mrcs vanished after import" in export.json()["detail"]
        assert client.delete(f"/api/datasets/{dataset['id']}").status_code == 204
        assert star.is_file() and (root / "project" / "Extract" / "job003" / "a.mrcs").is_file()


def test_cryoclust_import_registers_a_path_and_says_why_not(tmp_path, capsys):
    from cryoclust.cli import main

    root, outside = lab_storage(tmp_path)
    settings = make_settings(tmp_path / "data", IMPORT_ROOTS=[root], API_TOKEN="lab-token")
    with running_api(settings) as api:
        star = root / "project" / "Select" / "job010" / "particles.star"
        assert main(["import", str(star), "--server", api.url, "--token", "lab-token", "--name", "P12"]) == 0
        out = capsys.readouterr()
        dataset_id = out.out.strip()
        assert "60 particles of 16 px, 2 Å/px, 3 file(s) read in place" in out.err
        with api.client() as client:
            assert client.get(f"/api/datasets/{dataset_id}").json()["name"] == "P12"
        assert (
            main(["import", str(outside / "secret.mrcs"), "--server", api.url, "--token", "lab-token"]) == 1
        )
        assert "refused (403)" in capsys.readouterr().err
        assert main(["import", str(star), "--server", api.url, "--token", "wrong"]) == 1
        assert "refused (401)" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["colon-separated", "json-list"])
def test_import_roots_come_from_the_environment(monkeypatch, tmp_path, spelling):
    from cryoclust.core.settings import Settings

    first, second = tmp_path / "a", tmp_path / "b"
    value = f"{first}{os.pathsep}{second}" if spelling == "colon-separated" else f'["{first}", "{second}"]'
    monkeypatch.setenv("CRYOCLUST_IMPORT_ROOTS", value)
    assert Settings().IMPORT_ROOTS == [first, second]
    monkeypatch.setenv("CRYOCLUST_IMPORT_ROOTS", "")
    assert Settings().IMPORT_ROOTS == []


def test_imported_dataset_and_its_subsets_on_both_databases(tmp_path, db_url):
    root, _ = lab_storage(tmp_path)
    star = root / "project" / "Select" / "job010" / "particles.star"
    with (
        running_api(make_settings(tmp_path / "data", DATABASE_URL=db_url, IMPORT_ROOTS=[root])) as api,
        api.client() as client,
    ):
        dataset = client.post("/api/datasets/import", json={"path": str(star), "pixel_size": 1.1}).json()
        assert (dataset["pixel_size"], dataset["pixel_size_known"]) == (1.1, True)
        subset = client.post(f"/api/datasets/{dataset['id']}/subsets", json={"indices": [0, 45]})
        assert subset.status_code == 201, subset.text
        assert subset.json()["imported_from"] == dataset["imported_from"] == str(star)
        assert client.get(f"/api/datasets/{subset.json()['id']}/particles/1.png").status_code == 200
        assert [d["id"] for d in client.get("/api/datasets").json()] == [subset.json()["id"], dataset["id"]]
