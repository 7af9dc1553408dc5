"""A Python client of the cryoclust REST API, for scripts and notebooks.

    from cryoclust.client import Client

    with Client("http://gpu-box:8000", token="...") as cc:
        ds = cc.upload(["particles.star", "stack1.mrcs", "stack2.mrcs"], progress=print)
        big = cc.upload_resumable("run7_particles.mrcs")    # in pieces: survives a dropped connection
        job = cc.start_job(ds.id, cluster_num=20, round_num=8)
        for event in cc.events(job.id):          # live: status, round_started, loss, ..., end
            if event.kind == "round":
                print(event.data["round"], event.data["counts"])
        job = cc.job(job.id)
        emb = cc.embedding(job.id)               # .xy (N, 2) float32, .labels (N,) 1-based
        lay = cc.embedding(job.id, view="umap")  # the last round's UMAP layout, the same form
        avg = cc.averages(job.id)                # (k, B, B) float32, at the input's box
        good = cc.create_subset(ds.id, job_id=job.id, classes=[2, 5, 7])
        again = cc.start_job(good.id, cluster_num=10)

Typed results are small dataclasses (Dataset, Job, Event, Embedding, ClassInfo); arrays are
numpy. Errors from the server raise ApiError with its status and message. This module talks
HTTP only: it imports nothing of the server (checked by lint-imports).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import numpy as np

__all__ = ["ApiError", "ClassInfo", "Client", "Dataset", "Embedding", "Event", "Job", "decode_embedding"]

TERMINAL = ("succeeded", "failed", "cancelled")
TUS = {"Tus-Resumable": "1.0.0"}
# Worth another try of a resumable upload after a pause: the server holds another offset than
# thought (409), another request still writes the upload (423), a proxy or the server is restarting.
RETRY_STATUSES = (409, 423, 502, 503, 504)
# The routes this client wraps: method name -> (HTTP method, path). tests/service checks that
# each exists on the server and that the tests call every one.
ROUTES: dict[str, tuple[str, str]] = {
    "health": ("GET", "/api/health"),
    "parameters": ("GET", "/api/parameters"),
    "upload": ("POST", "/api/datasets"),
    "import_path": ("POST", "/api/datasets/import"),
    "upload_resumable": ("POST", "/api/uploads"),
    "upload_resumable (offset)": ("HEAD", "/api/uploads/{upload_id}"),
    "upload_resumable (bytes)": ("PATCH", "/api/uploads/{upload_id}"),
    "upload_resumable (dataset)": ("POST", "/api/datasets/from-uploads"),
    "datasets": ("GET", "/api/datasets"),
    "dataset": ("GET", "/api/datasets/{dataset_id}"),
    "delete_dataset": ("DELETE", "/api/datasets/{dataset_id}"),
    "create_subset": ("POST", "/api/datasets/{dataset_id}/subsets"),
    "start_job": ("POST", "/api/jobs"),
    "jobs": ("GET", "/api/jobs"),
    "job": ("GET", "/api/jobs/{job_id}"),
    "cancel": ("POST", "/api/jobs/{job_id}/cancel"),
    "delete_job": ("DELETE", "/api/jobs/{job_id}"),
    "events": ("GET", "/api/jobs/{job_id}/events"),
    "loss": ("GET", "/api/jobs/{job_id}/loss"),
    "rounds": ("GET", "/api/jobs/{job_id}/rounds"),
    "embedding": ("GET", "/api/jobs/{job_id}/rounds/{round_ref}/embedding"),
    "classes": ("GET", "/api/jobs/{job_id}/rounds/{round_ref}/classes"),
    "members": ("GET", "/api/jobs/{job_id}/rounds/{round_ref}/classes/{class_number}/members"),
    "averages": ("GET", "/api/jobs/{job_id}/rounds/{round_ref}/{filename}"),
    "labels": ("GET", "/api/jobs/{job_id}/rounds/{round_ref}/{filename}"),
    "export_subset": ("POST", "/api/jobs/{job_id}/subset"),
    "download_particles": ("GET", "/api/jobs/{job_id}/particles.star"),
    "download_particles_cs": ("GET", "/api/jobs/{job_id}/particles.cs"),
}


class ApiError(Exception):
    """The server refused a request: HTTP status and its message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def _build(cls, data: dict):
    """A dataclass from a JSON object, ignoring fields the client does not know (newer servers)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names}, raw=data)


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    n_particles: int
    box_size: int
    pixel_size: float
    files: list[str]
    has_ctf: bool = False
    pixel_size_known: bool = True
    parent_id: str | None = None
    source_job_id: str | None = None
    source_round: int | None = None
    source_classes: list[int] | None = None
    imported_from: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Job:
    id: str
    dataset_id: str
    status: str
    params: dict
    round: int
    round_num: int
    progress: float
    effective_params: dict | None = None
    device: str | None = None
    worker: str | None = None
    error: str | None = None
    rounds_done: int = 0
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # status, stage, round_started, loss, epoch, round, end
    data: dict


@dataclass(frozen=True)
class Embedding:
    xy: np.ndarray  # (N, 2) float32: the 2-D projection of every particle's embedding
    labels: np.ndarray  # (N,) int: class of each particle, 1-based


def decode_embedding(data: bytes) -> Embedding:
    """An Embedding from the bytes of GET .../embedding?format=binary: b"CCE1", uint32 n, k and
    0, then float32 x[n], float32 y[n], uint16 class[n] (1-based), little-endian."""
    if len(data) < 16 or data[:4] != b"CCE1":
        raise ValueError("not a cryoclust binary embedding (no CCE1 header)")
    n = int(np.frombuffer(data, dtype="<u4", count=1, offset=4)[0])
    if len(data) < 16 + 10 * n:
        raise ValueError(f"binary embedding of {n} particles is cut short at {len(data)} bytes")
    columns = np.frombuffer(data, dtype="<f4", count=2 * n, offset=16).reshape(2, n)
    labels = np.frombuffer(data, dtype="<u2", count=n, offset=16 + 8 * n)
    return Embedding(np.ascontiguousarray(columns.T, dtype=np.float32), labels.astype(np.int64))


@dataclass(frozen=True)
class ClassInfo:
    number: int  # 1-based
    count: int
    fraction: float
    quality: float | None  # FRC 0.5 resolution in Å; None when the pixel size is unknown
    quality_nyquist: float | None  # the same figure as a fraction of Nyquist
    empty: bool = False  # the class of the boxes that look empty (no particle)


class _ProgressReader:
    """A file whose reads report the bytes sent so far (httpx streams multipart from it)."""

    def __init__(self, path: Path, report: Callable[[int], None]) -> None:
        self._file = open(path, "rb")  # noqa: SIM115  (closed by the upload that opened it)
        self._report = report
        self.name = path.name

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._report(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class Client:
    """The REST API of one cryoclust server. `token`: its CRYOCLUST_API_TOKEN, if it asks one."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            raise ApiError(response.status_code, detail if isinstance(detail, str) else json.dumps(detail))
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    def _save(self, response: httpx.Response, target: str | os.PathLike) -> Path:
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
        return target

    # ------------------------------------------------------------------ server

    def health(self) -> dict:
        """{status, database, broker, workers}."""
        return self._json("GET", "/api/health")

    def parameters(self) -> list[dict]:
        """Every job parameter: name, type, default, range or choices, help."""
        return self._json("GET", "/api/parameters")

    # ------------------------------------------------------------------ datasets

    def upload(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        name: str | None = None,
        pixel_size: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Dataset:
        """Upload a stack, or a .star / cryoSPARC .cs with the stacks it names, as one dataset.

        `progress(sent, total)` is called as bytes go out; `pixel_size` (Å/px) overrides the files.
        """
        paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        total = sum(p.stat().st_size for p in paths)
        sent = 0

        def report(n: int) -> None:
            nonlocal sent
            sent += n
            if progress is not None and n:
                progress(sent, total)

        readers = [_ProgressReader(p, report) for p in paths]
        try:
            files = [("files", (r.name, r, "application/octet-stream")) for r in readers]
            params = {"pixel_size": pixel_size} if pixel_size is not None else None
            data = {"name": name} if name else None
            return _build(Dataset, self._json("POST", "/api/datasets", files=files, data=data, params=params))
        finally:
            for r in readers:
                r.close()

    def upload_resumable(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        name: str | None = None,
        pixel_size: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int = 32 * 1024**2,
        retries: int = 20,
    ) -> Dataset:
        """As `upload`, in pieces over the tus protocol: a dropped connection or a restarted server
        costs a pause and at most one piece, not the whole transfer (up to `retries` times in a
        row per file, waiting up to 30 s between tries)."""
        paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        sizes = [p.stat().st_size for p in paths]
        total, before, ids = sum(sizes), 0, []
        for path, size in zip(paths, sizes):
            metadata = "filename " + base64.b64encode(path.name.encode()).decode()
            created = self._request(
                "POST",
                "/api/uploads",
                headers={**TUS, "Upload-Length": str(size), "Upload-Metadata": metadata},
            )
            location = created.headers["location"]
            ids.append(location.rstrip("/").rsplit("/", 1)[-1])

            def report(done: int, start: int = before) -> None:
                if progress is not None:
                    progress(start + done, total)

            self._send_pieces(path, size, location, chunk_size, retries, report)
            before += size
        body: dict = {"uploads": ids}
        if name:
            body["name"] = name
        if pixel_size is not None:
            body["pixel_size"] = pixel_size
        return _build(Dataset, self._json("POST", "/api/datasets/from-uploads", json=body))

    def _send_pieces(
        self,
        path: Path,
        size: int,
        location: str,
        chunk_size: int,
        retries: int,
        report: Callable[[int], object],
    ) -> None:
        """PATCH the file from where the server stands until it holds all of it."""
        offset: int | None = None  # unknown: ask the server (at the start and after a failure)
        failures = 0
        with open(path, "rb") as handle:
            while True:
                try:
                    if offset is None:
                        offset = int(self._request("HEAD", location, headers=TUS).headers["upload-offset"])
                        report(offset)
                    if offset >= size:
                        return
                    handle.seek(offset)
                    piece = handle.read(chunk_size)
                    answer = self._request(
                        "PATCH",
                        location,
                        content=piece,
                        headers={
                            **TUS,
                            "Upload-Offset": str(offset),
                            "Content-Type": "application/offset+octet-stream",
                        },
                    )
                    offset = int(answer.headers["upload-offset"])
                    report(offset)
                    failures = 0
                except (httpx.TransportError, ApiError) as exc:
                    if isinstance(exc, ApiError) and exc.status not in RETRY_STATUSES:
                        raise
                    failures += 1
                    if failures > retries:
                        raise
                    offset = None
                    time.sleep(min(30.0, 0.5 * 2 ** (failures - 1)))

    def import_path(
        self, path: str | os.PathLike, name: str | None = None, pixel_size: float | None = None
    ) -> Dataset:
        """Register a stack, .star or .cs that already lies on the server (under one of its
        CRYOCLUST_IMPORT_ROOTS) as a dataset; nothing is sent or copied. `path` is the server's."""
        body: dict = {"path": os.fspath(path)}
        if name:
            body["name"] = name
        if pixel_size is not None:
            body["pixel_size"] = pixel_size
        return _build(Dataset, self._json("POST", "/api/datasets/import", json=body))

    def datasets(self) -> list[Dataset]:
        return [_build(Dataset, d) for d in self._json("GET", "/api/datasets")]

    def dataset(self, dataset_id: str) -> Dataset:
        return _build(Dataset, self._json("GET", f"/api/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/api/datasets/{dataset_id}")

    def create_subset(
        self,
        dataset_id: str,
        *,
        job_id: str | None = None,
        classes: Sequence[int] | None = None,
        round: int | str = "final",
        indices: Sequence[int] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """A derived dataset of some particles (no copy): a job's classes, or 0-based indices."""
        body: dict = {"round": round}
        if classes is not None:
            body.update(job_id=job_id, classes=[int(c) for c in classes])
        if indices is not None:
            body["indices"] = [int(i) for i in indices]
        if name:
            body["name"] = name
        return _build(Dataset, self._json("POST", f"/api/datasets/{dataset_id}/subsets", json=body))

    # ------------------------------------------------------------------ jobs

    def start_job(self, dataset_id: str, **params: Any) -> Job:
        """Queue a classification; `params` as in parameters() (unnamed ones take their defaults)."""
        return _build(Job, self._json("POST", "/api/jobs", json={"dataset_id": dataset_id, **params}))

    def jobs(self, status: str | None = None, dataset_id: str | None = None) -> list[Job]:
        query = {k: v for k, v in (("status", status), ("dataset_id", dataset_id)) if v}
        return [_build(Job, j) for j in self._json("GET", "/api/jobs", params=query)]

    def job(self, job_id: str) -> Job:
        return _build(Job, self._json("GET", f"/api/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        return _build(Job, self._json("POST", f"/api/jobs/{job_id}/cancel"))

    def delete_job(self, job_id: str) -> None:
        self._request("DELETE", f"/api/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> Job:
        """The job once it has ended (succeeded, failed or cancelled); TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
            time.sleep(poll)

    def events(self, job_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """The job's live events (Server-Sent Events) until its `end` event; resumable after
        `last_event_id`."""
        params = {"last_event_id": last_event_id} if last_event_id else None
        with self.http.stream("GET", f"/api/jobs/{job_id}/events", params=params, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, response.text)
            current: dict[str, str] = {}
            for line in response.iter_lines():
                if line:
                    if not line.startswith((":", "retry:")):
                        key, _, value = line.partition(": ")
                        current[key] = value
                    continue
                if "event" in current:
                    event = Event(
                        int(current.get("id", 0)), current["event"], json.loads(current.get("data", "{}"))
                    )
                    yield event
                    if event.kind == "end":
                        return
                current = {}

    # ------------------------------------------------------------------ results

    def loss(self, job_id: str) -> dict[int, list[dict]]:
        """Loss points per round: {round: [{step, pairs_done, epoch, loss}, ...]}."""
        return {r["round"]: r["points"] for r in self._json("GET", f"/api/jobs/{job_id}/loss")["rounds"]}

    def rounds(self, job_id: str) -> list[int]:
        """The complete rounds, 1-based."""
        return self._json("GET", f"/api/jobs/{job_id}/rounds")

    def embedding(self, job_id: str, round: int | str = "final", view: str = "pca") -> Embedding:
        """The 2-D projection and classes of every particle, fetched in the binary form (10
        bytes a particle, exact float32; its layout is in the README's REST API section).
        view="umap": the UMAP layout, which only the last round of a job run with umap on has
        (ApiError 404 otherwise)."""
        response = self._request(
            "GET",
            f"/api/jobs/{job_id}/rounds/{round}/embedding",
            params={"format": "binary", "view": view},
        )
        return decode_embedding(response.content)

    def classes(self, job_id: str, round: int | str = "final") -> list[ClassInfo]:
        rows = self._json("GET", f"/api/jobs/{job_id}/rounds/{round}/classes")
        return [
            ClassInfo(
                r["class"],
                r["count"],
                r["fraction"],
                r.get("quality"),
                r.get("quality_nyquist"),
                r.get("empty", False),
            )
            for r in rows
        ]

    def members(self, job_id: str, class_number: int, round: int | str = "final") -> np.ndarray:
        """0-based indices of every particle in one class."""
        path = f"/api/jobs/{job_id}/rounds/{round}/classes/{class_number}/members"
        first = self._json("GET", path, params={"limit": 10000})
        indices = list(first["indices"])
        while len(indices) < first["total"]:
            indices += self._json("GET", path, params={"offset": len(indices), "limit": 10000})["indices"]
        return np.asarray(indices, dtype=np.int64)

    def averages(self, job_id: str, round: int | str = "final", model_size: bool = False) -> np.ndarray:
        """The class averages of a round as float32, class 1 first: (k, B, B) at the input's box
        when the round has them (the last round of a finished job), else (or with `model_size`)
        (k, S, S) at the model size."""
        import mrcfile

        params = {"model_size": "true"} if model_size else None
        path = f"/api/jobs/{job_id}/rounds/{round}/class_averages.mrcs"
        content = self._request("GET", path, params=params).content
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "averages.mrcs"
            path.write_bytes(content)
            with mrcfile.open(path, permissive=True) as mrc:
                data = np.asarray(mrc.data, dtype=np.float32)
        return data.reshape(-1, data.shape[-2], data.shape[-1]).copy()

    def labels(self, job_id: str, round: int | str = "final") -> np.ndarray:
        """Class of every particle in a round, 1-based, in particle order."""
        text = self._request("GET", f"/api/jobs/{job_id}/rounds/{round}/labels.csv").text
        rows = text.strip().splitlines()[1:]
        return np.asarray([int(line.rsplit(",", 1)[1]) for line in rows], dtype=np.int64)

    def export_subset(
        self,
        job_id: str,
        classes: Sequence[int],
        target: str | os.PathLike,
        round: int | str = "final",
        format: str | None = None,
    ) -> Path:
        """The particles of `classes` as .star, .cs (cryoSPARC) or .mrcs, saved to `target`
        (the format follows its suffix unless given)."""
        format = format or Path(target).suffix.lstrip(".") or "star"
        body = {"round": round, "classes": [int(c) for c in classes], "format": format}
        return self._save(self._request("POST", f"/api/jobs/{job_id}/subset", json=body), target)

    def download_particles(self, job_id: str, target: str | os.PathLike) -> Path:
        """The final RELION particles.star (with _rlnClassNumber)."""
        return self._save(self._request("GET", f"/api/jobs/{job_id}/particles.star"), target)

    def download_particles_cs(self, job_id: str, target: str | os.PathLike) -> Path:
        """The final particles as a cryoSPARC .cs (uids, blob paths, alignments2D/class)."""
        return self._save(self._request("GET", f"/api/jobs/{job_id}/particles.cs"), target)
