"""The UMAP view through the service: a real worker lays out the last round of a job, the
embedding endpoint serves it with ?view=umap in the binary form (exactly the worker's float32
file), says which views a round has, and answers 404 with the reason for a round without one;
the Python client asks for it the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.api import upload, wait_for_job

from cryoclust.client import ApiError, Client, decode_embedding
from worker.engine.outputs import UMAP_FILE

pytestmark = pytest.mark.slow  # a real worker process, which compiles umap on its first use

# Two quick rounds of the network-free method: only round 2 gets a UMAP view.
INPUTS = {"method": "invariant", "cluster_num": 3, "round_num": 2, "size": 16}


def test_the_last_round_serves_its_umap_view(sqlite_api, workers, stack_file):
    worker = workers(sqlite_api.settings)
    with sqlite_api.client() as client:
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, **INPUTS})
        assert response.status_code == 201, response.text
        assert response.json()["params"]["umap"] is True  # on by default
        job = wait_for_job(client, response.json()["id"], timeout=240, logs=[worker])
        assert job["status"] == "succeeded", (job, worker.tail())
        base = f"/api/jobs/{job['id']}/rounds"
        folder = sqlite_api.data_dir / "jobs" / job["id"] / "round_02"

        sent = client.get(f"{base}/2/embedding", params={"format": "binary", "view": "umap"})
        assert sent.status_code == 200, sent.text
        assert sent.headers["x-embedding-views"] == "pca,umap"
        emb = decode_embedding(sent.content)
        np.testing.assert_array_equal(emb.xy, np.load(folder / UMAP_FILE))
        pca = decode_embedding(client.get(f"{base}/2/embedding", params={"format": "binary"}).content)
        np.testing.assert_array_equal(pca.xy, np.load(folder / "embedding_2d.npy"))
        assert not np.array_equal(emb.xy, pca.xy)
        np.testing.assert_array_equal(emb.labels, pca.labels)  # the same particles, the same classes
        assert np.isfinite(emb.xy).all() and len(emb.xy) == 60

        as_json = client.get(f"{base}/final/embedding", params={"view": "umap"})
        assert as_json.headers["x-embedding-views"] == "pca,umap"
        assert np.allclose(as_json.json()["x"], emb.xy[:, 0], atol=1e-4)

        first = client.get(f"{base}/1/embedding", params={"view": "umap"})
        assert first.status_code == 404 and "no UMAP view" in first.json()["detail"]
        assert client.get(f"{base}/1/embedding").headers["x-embedding-views"] == "pca"
        assert client.get(f"{base}/2/embedding", params={"view": "tsne"}).status_code == 422
        timings = [
            json.loads((folder.parent / f"round_0{r}" / "round.json").read_text())["timings"] for r in (1, 2)
        ]
        assert "umap" not in timings[0] and timings[1]["umap"] > 0

    with Client(sqlite_api.url) as cc:
        np.testing.assert_array_equal(cc.embedding(job["id"], view="umap").xy, emb.xy)
        with pytest.raises(ApiError) as missing:
            cc.embedding(job["id"], 1, view="umap")
        assert missing.value.status == 404
    assert "Traceback" not in worker.tail(20000)
