"""Datasets API on real SQLite and real PostgreSQL: upload, list, get, thumbnails, delete, and
every kind of bad upload (refused with a reason, leaving no file and no row behind)."""

from __future__ import annotations

import hashlib
import io

import mrcfile
import numpy as np
import pytest
from PIL import Image
from support.api import running_api, upload
from support.settings import make_settings
from support.stacks import write_stack

from worker.engine.ctf import CtfParams
from worker.engine.io.star import write_particles_star


def leftovers(api) -> list[str]:
    return sorted(p.name for folder in ("datasets", "tmp") for p in (api.data_dir / folder).iterdir())


def test_upload_list_get_thumbnail_delete(api, stack_file):
    with api.client() as client:
        response = upload(client, stack_file, name="my particles")
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["name"] == "my particles"
        assert (dataset["n_particles"], dataset["box_size"], dataset["pixel_size"]) == (60, 32, 2.0)
        assert dataset["mode"] == 2 and dataset["has_ctf"] is False
        assert dataset["size_bytes"] == stack_file.stat().st_size
        assert dataset["sha256"] == hashlib.sha256(stack_file.read_bytes()).hexdigest()
        assert dataset["files"] == ["particles.mrcs"]
        stored = api.data_dir / "datasets" / dataset["id"] / "particles.mrcs"
        assert stored.read_bytes() == stack_file.read_bytes()

        assert [d["id"] for d in client.get("/api/datasets").json()] == [dataset["id"]]
        assert client.get(f"/api/datasets/{dataset['id']}").json() == dataset

        thumb = client.get(f"/api/datasets/{dataset['id']}/particles/59.png", params={"size": 48})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(thumb.content)).size == (48, 48)
        assert client.get(f"/api/datasets/{dataset['id']}/particles/60.png").status_code == 404
        assert (
            client.get(f"/api/datasets/{dataset['id']}/particles/0.png", params={"size": 4}).status_code
            == 422
        )

        assert client.delete(f"/api/datasets/{dataset['id']}").status_code == 204
        assert client.get(f"/api/datasets/{dataset['id']}").status_code == 404
        assert client.get("/api/datasets").json() == []
        assert not stored.parent.exists()


def test_upload_star_with_its_stacks(api, tmp_path):
    first = write_stack(tmp_path / "up" / "a.mrcs", n=5, box=16, seed=1)
    second = write_stack(tmp_path / "up" / "b.mrcs", n=4, box=16, seed=2)
    names = [f"{i:06d}@a.mrcs" for i in range(1, 6)] + [f"{i:06d}@b.mrcs" for i in range(1, 5)]
    n = len(names)
    ctf = CtfParams(*(np.full(n, v, dtype=float) for v in (15000.0, 14000.0, 10.0, 300.0, 2.7, 0.1, 0.0)))
    star = write_particles_star(
        tmp_path / "up" / "particles.star", names, pixel_size=2.0, ctf=ctf, image_size=16
    )
    with api.client() as client:
        response = upload(client, star, first, second)
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["n_particles"] == 9 and dataset["box_size"] == 16
        assert dataset["has_ctf"] is True
        assert dataset["files"] == ["a.mrcs", "b.mrcs", "particles.star"]
        # Particle 6 is the first image of b.mrcs.
        thumb = client.get(f"/api/datasets/{dataset['id']}/particles/5.png")
        assert thumb.status_code == 200


def _truncated(tmp_path):
    path = write_stack(tmp_path / "t" / "cut.mrcs", n=20, box=32)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [path]


def _not_mrc(tmp_path):
    path = tmp_path / "t" / "notes.mrcs"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an MRC file\n" * 100)
    return [path]


def _empty(tmp_path):
    path = tmp_path / "t" / "empty.mrcs"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return [path]


def _star_without_stacks(tmp_path):
    (tmp_path / "t").mkdir(parents=True, exist_ok=True)
    star = write_particles_star(
        tmp_path / "t" / "p.star", ["000001@missing.mrcs", "000002@missing.mrcs"], pixel_size=1.0
    )
    return [star]


def _wrong_suffix(tmp_path):
    path = write_stack(tmp_path / "t" / "x.mrcs", n=3, box=16)
    return [path.rename(path.with_suffix(".txt"))]


def _two_stacks_no_star(tmp_path):
    return [
        write_stack(tmp_path / "t" / "a.mrcs", n=3, box=16),
        write_stack(tmp_path / "t" / "b.mrcs", n=3, box=16),
    ]


def _volume(tmp_path):
    path = tmp_path / "t" / "map.mrc"
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((16, 16, 16), np.float32))
        mrc.set_volume()
    return [path]


BAD_UPLOADS = {
    "not-mrc": (_not_mrc, 400, "notes.mrcs"),
    "truncated": (_truncated, 400, "cut.mrcs"),
    "empty": (_empty, 400, "empty"),
    "star-without-stacks": (_star_without_stacks, 400, "missing.mrcs"),
    "wrong-suffix": (_wrong_suffix, 415, "x.txt"),
    "two-stacks-without-star": (_two_stacks_no_star, 400, ".star"),
    "volume": (_volume, 400, "volume"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
def test_bad_upload_is_refused_with_a_reason_and_leaves_nothing(api, tmp_path, case):
    make, status, words = BAD_UPLOADS[case]
    with api.client() as client:
        response = upload(client, *make(tmp_path))
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
        assert client.get("/api/datasets").json() == []
    assert leftovers(api) == []


def test_upload_over_the_size_limit(tmp_path):
    stack = write_stack(tmp_path / "big.mrcs", n=60, box=32)  # about 250 kB
    with (
        running_api(make_settings(tmp_path / "data", MAX_UPLOAD_BYTES=100_000)) as api,
        api.client() as client,
    ):
        response = upload(client, stack)
        assert response.status_code == 413, response.text
        assert "limit" in response.json()["detail"]

        # Without a Content-Length the stream itself is cut at the limit.
        boundary = "cryoclustboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.mrcs"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body = head + stack.read_bytes() + f"\r\n--{boundary}--\r\n".encode()

        def chunks():
            for start in range(0, len(body), 16384):
                yield body[start : start + 16384]

        response = client.post(
            "/api/datasets",
            content=chunks(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413, response.text
        assert client.get("/api/datasets").json() == []
    assert leftovers(api) == []


def test_upload_without_files_or_not_multipart(sqlite_api):
    with sqlite_api.client() as client:
        response = client.post("/api/datasets", data={"name": "nothing"})
        assert response.status_code in (400, 415)
        response = client.post("/api/datasets", files=[("name", (None, "x"))])
        assert response.status_code == 400 and "no file" in response.json()["detail"]
        response = client.post("/api/datasets", json={"files": []})
        assert response.status_code == 415
    assert leftovers(sqlite_api) == []


def test_file_names_never_become_paths(sqlite_api, stack_file):
    with sqlite_api.client() as client:
        response = client.post(
            "/api/datasets", files=[("files", ("../../escape.mrcs", stack_file.read_bytes()))]
        )
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["files"] == ["escape.mrcs"]
        assert (sqlite_api.data_dir / "datasets" / dataset["id"] / "escape.mrcs").is_file()
        assert not (sqlite_api.data_dir.parent / "escape.mrcs").exists()
