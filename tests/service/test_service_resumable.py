"""Resumable uploads (tus 1.0.0) against the real API: a connection closed in the middle of the
body keeps what arrived, the offset survives a server restart, the resumed file has the same
sha256 and becomes a dataset; the token and the size limit hold."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from urllib.parse import urlsplit

import httpx
from support.api import running_api
from support.settings import make_settings
from support.stacks import write_stack

TUS = {"Tus-Resumable": "1.0.0"}


def create(client: httpx.Client, name: str, length: int, **headers: str) -> httpx.Response:
    metadata = f"filename {base64.b64encode(name.encode()).decode()}"
    return client.post(
        "/api/uploads", headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": metadata, **headers}
    )


def patch(client: httpx.Client, location: str, offset: int, data: bytes, **headers: str) -> httpx.Response:
    return client.patch(
        location,
        content=data,
        headers={
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            **headers,
        },
    )


def offset_of(client: httpx.Client, location: str) -> int:
    response = client.head(location, headers=TUS)
    assert response.status_code == 200, response.status_code
    assert response.headers["cache-control"] == "no-store"
    return int(response.headers["upload-offset"])


def send_part_and_drop(url: str, location: str, data: bytes, part: int) -> None:
    """A PATCH that announces all of `data`, sends `part` bytes and closes the connection."""
    parts = urlsplit(url)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode() + data[:part])


def settled_offset(client: httpx.Client, location: str, timeout: float = 15) -> int:
    """The offset once the server has finished with the dropped request (it stops moving)."""
    deadline = time.monotonic() + timeout
    last = offset_of(client, location)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        offset = offset_of(client, location)
        if offset == last and offset > 0:
            return offset
        last = offset
    raise AssertionError(f"the offset did not settle: {last}")


def test_upload_dropped_midway_resumes_after_a_restart_with_the_same_sha256(tmp_path):
    stack = write_stack(tmp_path / "in" / "big.mrcs", n=2000, box=32)  # 8 MB
    data = stack.read_bytes()
    half = len(data) // 2 + 12345
    settings = make_settings(tmp_path / "data")
    with running_api(settings) as api, api.client() as client:
        options = client.options("/api/uploads")
        assert options.status_code == 204 and options.headers["tus-version"] == "1.0.0"
        assert "creation" in options.headers["tus-extension"]
        created = create(client, stack.name, len(data))
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        assert location.startswith("/api/uploads/") and offset_of(client, location) == 0
        send_part_and_drop(api.url, location, data, half)
        # What reached the app before the drop is kept (the server may drop what it had not read yet).
        kept = settled_offset(client, location)
        assert half // 2 < kept <= half, kept
        assert (api.data_dir / "uploads" / location.rsplit("/", 1)[1] / "data").read_bytes() == data[:kept]
        # A PATCH from the wrong offset is refused and changes nothing.
        assert patch(client, location, 0, data[:100]).status_code == 409
        finish = client.post("/api/datasets/from-uploads", json={"uploads": [location.rsplit("/", 1)[1]]})
        assert finish.status_code == 409 and "send the rest first" in finish.json()["detail"]

    with running_api(settings) as api, api.client() as client:  # a new server on the same DATA_DIR
        offset = offset_of(client, location)
        assert offset == kept, "the offset survives a restart"
        resumed = patch(client, location, offset, data[offset:])
        assert resumed.status_code == 204, resumed.text
        assert int(resumed.headers["upload-offset"]) == len(data)
        finish = client.post(
            "/api/datasets/from-uploads", json={"uploads": [location.rsplit("/", 1)[1]], "name": "resumed"}
        )
        assert finish.status_code == 201, finish.text
        dataset = finish.json()
        assert dataset["sha256"] == hashlib.sha256(data).hexdigest()
        assert (dataset["name"], dataset["n_particles"], dataset["files"]) == ("resumed", 2000, ["big.mrcs"])
        assert (api.data_dir / "datasets" / dataset["id"] / "big.mrcs").read_bytes() == data
        assert client.head(location, headers=TUS).status_code == 404, "a used upload is gone"
        assert list((api.data_dir / "uploads").iterdir()) == []


def test_star_and_stacks_as_resumable_uploads_are_checked_like_an_upload(tmp_path):
    from worker.engine.io.star import write_particles_star

    first = write_stack(tmp_path / "in" / "a.mrcs", n=5, box=16, seed=1)
    star = write_particles_star(
        tmp_path / "in" / "p.star",
        [f"{i:06d}@a.mrcs" for i in range(1, 6)] + ["000001@missing.mrcs"],
        pixel_size=2.0,
        image_size=16,
    )
    with running_api(make_settings(tmp_path / "data")) as api, api.client() as client:
        ids = []
        for path in (star, first):
            location = create(client, path.name, path.stat().st_size).headers["location"]
            assert patch(client, location, 0, path.read_bytes()).status_code == 204
            ids.append(location.rsplit("/", 1)[1])
        refused = client.post("/api/datasets/from-uploads", json={"uploads": ids})
        assert refused.status_code == 400 and "missing.mrcs" in refused.json()["detail"]
        assert all(offset_of(client, f"/api/uploads/{i}") > 0 for i in ids), "kept to try again"
        assert client.delete(f"/api/uploads/{ids[0]}", headers=TUS).status_code == 204
        assert client.head(f"/api/uploads/{ids[0]}", headers=TUS).status_code == 404
        assert client.get("/api/datasets").json() == []


def test_resumable_uploads_keep_the_token_and_the_size_limit(tmp_path):
    settings = make_settings(tmp_path / "data", API_TOKEN="up-token", MAX_UPLOAD_BYTES=100_000)
    with running_api(settings) as api, api.client() as client, httpx.Client(base_url=api.url) as anonymous:
        assert create(anonymous, "a.mrcs", 1000).status_code == 401
        assert create(client, "a.mrcs", 1000, Authorization="Bearer wrong").status_code == 401
        location = create(client, "a.mrcs", 60_000).headers["location"]
        assert patch(anonymous, location, 0, b"x" * 1000).status_code == 401
        assert anonymous.head(location, headers=TUS).status_code == 401
        assert anonymous.delete(location, headers=TUS).status_code == 401
        assert offset_of(client, location) == 0, "nothing was written without the token"

        too_big = create(client, "b.mrcs", 100_001)
        assert too_big.status_code == 413 and "100,000" in too_big.json()["detail"]
        assert patch(client, location, 0, b"x" * 60_001).status_code == 400, "more than Upload-Length"
        assert patch(client, location, 0, b"x" * 60_000).status_code == 204
        other = create(client, "c.mrcs", 60_000).headers["location"]
        assert patch(client, other, 0, b"y" * 60_000).status_code == 204
        both = [location.rsplit("/", 1)[1], other.rsplit("/", 1)[1]]
        together = client.post("/api/datasets/from-uploads", json={"uploads": both})
        assert together.status_code == 413 and "together" in together.json()["detail"]

        assert create(client, "notes.txt", 10).status_code == 415
        assert client.post("/api/uploads", headers={"Upload-Length": "10"}).status_code == 412
        assert patch(client, location, 0, b"", **{"Content-Type": "text/plain"}).status_code == 415
        assert client.head("/api/uploads/../../etc", headers=TUS).status_code == 404


class DropsSomePatches(httpx.HTTPTransport):
    """A real connection that fails every third PATCH before it is sent, as a flaky network does."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = self.dropped = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.patches += 1
            if self.patches % 3 == 2:
                self.dropped += 1
                raise httpx.WriteError("connection reset by peer", request=request)
        return super().handle_request(request)


def test_the_client_resumes_after_dropped_connections(tmp_path):
    from cryoclust.client import Client

    stack = write_stack(tmp_path / "in" / "flaky.mrcs", n=300, box=32)
    with running_api(make_settings(tmp_path / "data")) as api:
        transport = DropsSomePatches()
        with Client(api.url, transport=transport) as cc:
            dataset = cc.upload_resumable(stack, chunk_size=64_000)
    assert transport.dropped >= 5
    assert dataset.raw["sha256"] == hashlib.sha256(stack.read_bytes()).hexdigest()
    assert dataset.n_particles == 300


def test_abandoned_uploads_are_deleted_when_the_server_starts(tmp_path):
    import os

    settings = make_settings(tmp_path / "data", UPLOAD_KEEP_DAYS=1.0)
    with running_api(settings) as api, api.client() as client:
        old = create(client, "old.mrcs", 1000).headers["location"]
        fresh = create(client, "fresh.mrcs", 1000).headers["location"]
        assert patch(client, old, 0, b"x" * 10).status_code == 204
        folder = api.data_dir / "uploads" / old.rsplit("/", 1)[1]
        two_days_ago = time.time() - 2 * 86400
        for path in (folder, *folder.iterdir()):
            os.utime(path, (two_days_ago, two_days_ago))
    with running_api(settings) as api, api.client() as client:
        deadline = time.monotonic() + 10
        while client.head(old, headers=TUS).status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.head(old, headers=TUS).status_code == 404
        assert offset_of(client, fresh) == 0
