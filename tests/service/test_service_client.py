"""cryoclust.client.Client against a real server and worker: every route it wraps is called
(and exists on the server), with typed results and numpy arrays that match the server's files."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cryosparc.dataset import Dataset as CsDataset
from support.api import running_api
from support.databases import REDIS_URL
from support.net import require_port
from support.settings import make_settings
from support.stacks import write_stack

from cryoclust.client import ROUTES, ApiError, Client, decode_embedding

TINY = {
    "cluster_num": 3,
    "epoch_num": 1,
    "round_num": 2,
    "batch_size": 16,
    "size": 16,
    "device": "cpu",
    "umap": False,
}


def route_of(method: str, path: str) -> tuple[str, str] | None:
    """The wrapped route a request went to (path templates matched segment by segment)."""
    for template_method, template in ROUTES.values():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if template_method == method and re.match(pattern, path):
            literal = [t for t in ROUTES.values() if t == (method, path)]
            return literal[0] if literal else (template_method, template)
    return None


def test_the_client_covers_every_route_it_wraps(tmp_path, db_url, workers):
    require_port(6379, "Redis")
    settings = make_settings(
        tmp_path / "data",
        DATABASE_URL=db_url,
        BROKER_URL=REDIS_URL,
        API_TOKEN="client-token",
        IMPORT_ROOTS=[tmp_path / "in"],
    )
    stack = write_stack(tmp_path / "in" / "particles.mrcs", n=60, box=32, pixel_size=0.0)
    hit: set[tuple[str, str]] = set()
    with running_api(settings) as api:
        spec = api.app.openapi()["paths"]
        server_routes = {(m.upper(), path) for path, methods in spec.items() for m in methods}
        assert set(ROUTES.values()) <= server_routes, set(ROUTES.values()) - server_routes
        workers(settings)
        with Client(api.url, token="wrong") as stranger, pytest.raises(ApiError) as refused:
            stranger.datasets()
        assert refused.value.status == 401
        cc = Client(api.url, token="client-token")
        cc.http.event_hooks["request"].append(
            lambda request: hit.add(route_of(request.method, request.url.path))
        )
        with cc:
            assert cc.health()["status"] in ("ok", "degraded")
            assert "cluster_num" in {p["name"] for p in cc.parameters()}
            seen: list[tuple[int, int]] = []
            ds = cc.upload(
                stack, name="stack", pixel_size=None, progress=lambda sent, total: seen.append((sent, total))
            )
            assert (ds.n_particles, ds.box_size, ds.pixel_size_known) == (60, 32, False)
            assert seen and seen[-1] == (stack.stat().st_size, stack.stat().st_size)
            assert [d.id for d in cc.datasets()] == [ds.id] and cc.dataset(ds.id).name == "stack"
            pieces: list[tuple[int, int]] = []
            resumable = cc.upload_resumable(
                stack,
                name="in pieces",
                chunk_size=50_000,
                progress=lambda sent, total: pieces.append((sent, total)),
            )
            assert resumable.raw["sha256"] == ds.raw["sha256"] and resumable.n_particles == 60
            assert len(pieces) > 3 and pieces[-1] == (stack.stat().st_size, stack.stat().st_size)
            cc.delete_dataset(resumable.id)
            imported = cc.import_path(stack, name="in place", pixel_size=1.5)
            assert (imported.n_particles, imported.pixel_size, imported.imported_from) == (
                60,
                1.5,
                str(stack.resolve()),
            )
            cc.delete_dataset(imported.id)

            job = cc.start_job(ds.id, **TINY)
            assert job.status == "queued" and job.params["cluster_num"] == 3
            kinds = [e.kind for e in cc.events(job.id)]
            assert kinds[-1] == "end" and "round" in kinds and "loss" in kinds
            job = cc.wait(job.id, timeout=120)
            assert (
                job.status == "succeeded" and job.device == "cpu" and job.effective_params["device"] == "cpu"
            )
            assert [j.id for j in cc.jobs(status="succeeded")] == [job.id]
            assert cc.rounds(job.id) == [1, 2] and sorted(cc.loss(job.id)) == [1, 2]

            emb = cc.embedding(job.id)
            labels = cc.labels(job.id)
            assert emb.xy.shape == (60, 2) and emb.xy.dtype == np.float32
            np.testing.assert_array_equal(emb.labels, labels)
            # The binary form is the round's float32 file exactly; the JSON form rounds it.
            final = max((settings.data_dir / "jobs" / job.id).glob("round_*"))
            np.testing.assert_array_equal(emb.xy, np.load(final / "embedding_2d.npy"))
            as_json = cc.http.get(f"/api/jobs/{job.id}/rounds/final/embedding").json()
            np.testing.assert_allclose(emb.xy, np.column_stack([as_json["x"], as_json["y"]]), atol=1e-4)
            by_accept = cc.http.get(
                f"/api/jobs/{job.id}/rounds/final/embedding", headers={"Accept": "application/octet-stream"}
            )
            assert by_accept.headers["content-type"] == "application/octet-stream"
            np.testing.assert_array_equal(decode_embedding(by_accept.content).labels, labels)
            classes = cc.classes(job.id, round=2)
            assert [c.number for c in classes] == [1, 2, 3] and sum(c.count for c in classes) == 60
            # No pixel size in the stack: the FRC figure comes per Nyquist, never in Å.
            assert all(c.quality is None for c in classes)
            assert any(c.quality_nyquist is not None and 0 < c.quality_nyquist <= 1 for c in classes)
            averages = cc.averages(job.id, round=1)
            assert averages.shape == (3, 16, 16) and averages.dtype == np.float32
            # the last round's default is at the input's box; model_size asks for the other
            assert cc.averages(job.id).shape == (3, 32, 32)
            assert cc.averages(job.id, model_size=True).shape == (3, 16, 16)
            np.testing.assert_array_equal(cc.members(job.id, 2), np.flatnonzero(labels == 2))

            star = cc.download_particles(job.id, tmp_path / "out" / "particles.star")
            assert "_rlnClassNumber" in star.read_text()
            cs = CsDataset.load(str(cc.download_particles_cs(job.id, tmp_path / "out" / "particles.cs")))
            np.testing.assert_array_equal(cs["alignments2D/class"], labels - 1)
            exported = CsDataset.load(str(cc.export_subset(job.id, [1, 3], tmp_path / "out" / "subset.cs")))
            np.testing.assert_array_equal(
                np.sort(cs["uid"][np.isin(labels, [1, 3])]), np.sort(exported["uid"])
            )

            derived = cc.create_subset(ds.id, job_id=job.id, classes=[1, 3])
            assert derived.n_particles == int(np.isin(labels, [1, 3]).sum()) and derived.parent_id == ds.id
            picked = cc.create_subset(derived.id, indices=[0, 1], name="two")
            assert picked.n_particles == 2 and picked.source_classes is None

            # Long enough whatever the default method: the reference method trains every epoch asked for.
            long_job = {**TINY, "method": "reference", "epoch_num": 1000, "round_num": 20}
            queued = cc.start_job(ds.id, **long_job)
            cancelled = cc.cancel(queued.id)
            assert cancelled.status in ("cancelled", "running")
            assert cc.wait(queued.id, timeout=60).status == "cancelled"
            cc.delete_job(queued.id)
            with pytest.raises(ApiError) as gone:
                cc.job(queued.id)
            assert gone.value.status == 404
            cc.delete_dataset(picked.id)
            assert picked.id not in {d.id for d in cc.datasets()}
    wrapped = set(ROUTES.values())
    assert wrapped - hit == set(), f"routes the client wraps but the test never called: {wrapped - hit}"
