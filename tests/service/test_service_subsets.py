"""Clean and reclassify over REST, and cryoSPARC files both ways: a .cs upload with its stacks,
a job on it run by a real worker, a derived dataset of chosen classes (no file copied) whose job
reads exactly those particles, and .cs downloads that round-trip through cryosparc-tools."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from cryosparc.dataset import Dataset
from support.api import running_api, upload, wait_for_job
from support.cryosparc import write_cs_export
from support.databases import REDIS_URL
from support.net import require_port
from support.settings import make_settings

TINY = {
    "cluster_num": 3,
    "epoch_num": 1,
    "round_num": 1,
    "batch_size": 16,
    "size": 16,
    "device": "cpu",
    "umap": False,
}


def labels_csv(client, job_id: str) -> list[dict]:
    text = client.get(f"/api/jobs/{job_id}/rounds/final/labels.csv").text
    return list(csv.DictReader(io.StringIO(text)))


def load_cs(content: bytes, tmp_path, name: str) -> Dataset:
    path = tmp_path / name
    path.write_bytes(content)
    return Dataset.load(str(path))


def test_a_derived_subset_job_runs_on_exactly_the_chosen_particles(tmp_path, db_url, workers):
    require_port(6379, "Redis")
    settings = make_settings(tmp_path / "data", BROKER_URL=REDIS_URL, DATABASE_URL=db_url)
    export = write_cs_export(tmp_path / "up")
    with running_api(settings) as api, api.client() as client:
        workers(settings)
        response = upload(client, *export.files)
        assert response.status_code == 201, response.text
        parent = response.json()
        assert parent["n_particles"] == 60 and parent["pixel_size"] == pytest.approx(1.7)
        assert parent["pixel_size_known"] is True and parent["parent_id"] is None

        first = client.post("/api/jobs", json={"dataset_id": parent["id"], **TINY}).json()
        assert wait_for_job(client, first["id"])["status"] == "succeeded"
        rows = labels_csv(client, first["id"])
        assert [r["image_name"] for r in rows] == export.image_names
        classes = np.array([int(r["class"]) for r in rows])

        # The final particles as .cs: the upload's uids and blob paths, the classes 0-based.
        cs = load_cs(client.get(f"/api/jobs/{first['id']}/particles.cs").content, tmp_path, "all.cs")
        np.testing.assert_array_equal(cs["uid"], export.uids)
        np.testing.assert_array_equal(cs["alignments2D/class"], classes - 1)
        assert list(cs["blob/path"])[:2] == ["J3/extract/mic1_particles.mrc", "J3/extract/mic2_particles.mrc"]

        chosen_classes = sorted({int(classes[0]), int(classes[-1])})
        chosen = np.flatnonzero(np.isin(classes, chosen_classes))
        response = client.post(
            f"/api/datasets/{parent['id']}/subsets", json={"job_id": first["id"], "classes": chosen_classes}
        )
        assert response.status_code == 201, response.text
        derived = response.json()
        assert derived["n_particles"] == chosen.size
        assert (
            derived["parent_id"],
            derived["source_job_id"],
            derived["source_round"],
            derived["source_classes"],
        ) == (parent["id"], first["id"], 1, chosen_classes)
        assert derived["files"] == ["indices.npy"] and derived["size_bytes"] < 2000  # no particle copied

        # The subset export as .cs carries the same particles as the derived dataset.
        export_cs = client.post(
            f"/api/jobs/{first['id']}/subset", json={"classes": chosen_classes, "format": "cs"}
        )
        assert export_cs.status_code == 200
        np.testing.assert_array_equal(
            load_cs(export_cs.content, tmp_path, "sub.cs")["uid"], export.uids[chosen]
        )

        # Thumbnails of the derived dataset are the parent's chosen particles.
        last = int(chosen[-1])
        assert (
            client.get(f"/api/datasets/{derived['id']}/particles/{chosen.size - 1}.png").content
            == client.get(f"/api/datasets/{parent['id']}/particles/{last}.png").content
        )

        second = client.post("/api/jobs", json={"dataset_id": derived["id"], **TINY, "cluster_num": 2}).json()
        assert wait_for_job(client, second["id"])["status"] == "succeeded"
        again = labels_csv(client, second["id"])
        assert [r["image_name"] for r in again] == [export.image_names[i] for i in chosen]
        cs = load_cs(client.get(f"/api/jobs/{second['id']}/particles.cs").content, tmp_path, "again.cs")
        np.testing.assert_array_equal(cs["uid"], export.uids[chosen])
        np.testing.assert_array_equal(cs["alignments2D/class"], [int(r["class"]) - 1 for r in again])

        # A subset of the subset by explicit indices still points into the first upload's files.
        response = client.post(f"/api/datasets/{derived['id']}/subsets", json={"indices": [2, 0]})
        assert response.status_code == 201, response.text
        grandchild = response.json()
        assert grandchild["n_particles"] == 2 and grandchild["parent_id"] == derived["id"]
        assert (
            client.get(f"/api/datasets/{grandchild['id']}/particles/1.png").content
            == client.get(f"/api/datasets/{parent['id']}/particles/{int(chosen[2])}.png").content
        )

        # The parent's files are in use: it cannot go before what was derived from it.
        assert client.delete(f"/api/datasets/{parent['id']}").status_code == 409
        assert client.delete(f"/api/datasets/{grandchild['id']}").status_code == 204


def test_subset_requests_that_cannot_work_are_refused(api, stack_file):
    with api.client() as client:
        dataset = upload(client, stack_file).json()
        path = f"/api/datasets/{dataset['id']}/subsets"
        assert client.post(path, json={}).status_code == 422
        assert client.post(path, json={"classes": [1]}).status_code == 422  # whose classes?
        assert client.post(path, json={"indices": [0], "classes": [1], "job_id": "x"}).status_code == 422
        assert client.post(path, json={"indices": [60]}).status_code == 422
        assert client.post(path, json={"indices": [-1]}).status_code == 422
        assert client.post(path, json={"job_id": "nope", "classes": [1]}).status_code == 404
        assert client.post("/api/datasets/nope/subsets", json={"indices": [0]}).status_code == 404
        ok = client.post(path, json={"indices": [5, 3, 5], "name": "two"})
        assert ok.status_code == 201 and ok.json()["n_particles"] == 2 and ok.json()["name"] == "two"


def test_pixel_size_given_at_upload_wins_and_an_unset_one_is_reported(api, tmp_path):
    from support.stacks import write_stack

    unset = write_stack(tmp_path / "u" / "unset.mrcs", n=6, pixel_size=0.0)
    with api.client() as client:
        plain = upload(client, unset).json()
        assert plain["pixel_size_known"] is False
        given = client.post(
            "/api/datasets", params={"pixel_size": 1.06}, files=[("files", (unset.name, unset.read_bytes()))]
        ).json()
        assert (given["pixel_size"], given["pixel_size_known"]) == (1.06, True)
        assert (
            client.post(
                "/api/datasets", params={"pixel_size": 0}, files=[("files", (unset.name, unset.read_bytes()))]
            ).status_code
            == 422
        )
