"""A finished job's last round is served at the input's box and pixel size by default: the
class_averages.mrcs download, the page's average.png and the client's averages; the model-size
ones stay one query flag away, and earlier rounds keep only theirs."""

from __future__ import annotations

import io
import zipfile

import mrcfile
import pytest
from support.api import upload_id, wait_for_job

from worker.engine.gallery import thumbnail_png

pytestmark = pytest.mark.slow  # a real worker process

# The reference method (plain class means) on the 32 px, 2 Å/px stack, at a model size of 16.
INPUTS = {
    "method": "reference",
    "cluster_num": 3,
    "epoch_num": 1,
    "batch_size": 16,
    "round_num": 2,
    "size": 16,
    "umap": False,  # numba would compile umap in each fresh worker (tens of seconds)
}


def _mrc(content: bytes, tmp_path, name: str):
    path = tmp_path / name
    path.write_bytes(content)
    with mrcfile.open(path, permissive=False) as mrc:
        return mrc.data.copy(), float(mrc.voxel_size.x)


def test_the_default_download_and_gallery_serve_the_full_size_averages(api, workers, stack_file, tmp_path):
    worker = workers(api.settings)
    with api.client() as client:
        dataset_id = upload_id(client, stack_file)
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, **INPUTS})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        job = wait_for_job(client, job_id, timeout=180, logs=[worker])
        assert job["status"] == "succeeded", (job, worker.tail())
        base = f"/api/jobs/{job_id}/rounds"

        default = client.get(f"{base}/final/class_averages.mrcs")
        assert default.status_code == 200
        assert (
            f'filename="{job_id}_round02_class_averages_full.mrcs"' in default.headers["content-disposition"]
        )
        full, voxel = _mrc(default.content, tmp_path, "default.mrcs")
        assert full.shape == (3, 32, 32) and voxel == pytest.approx(2.0, rel=1e-3)  # the input's
        explicit = client.get(f"{base}/2/class_averages_full.mrcs")
        assert explicit.content == default.content

        small_response = client.get(f"{base}/final/class_averages.mrcs", params={"model_size": "true"})
        assert f"{job_id}_round02_class_averages.mrcs" in small_response.headers["content-disposition"]
        small, small_voxel = _mrc(small_response.content, tmp_path, "small.mrcs")
        assert small.shape == (3, 16, 16) and small_voxel == pytest.approx(4.0, rel=1e-3)

        # an earlier round: only the model-size averages (full size costs a second full read)
        first, _ = _mrc(client.get(f"{base}/1/class_averages.mrcs").content, tmp_path, "first.mrcs")
        assert first.shape == (3, 16, 16)
        assert client.get(f"{base}/1/class_averages_full.mrcs").status_code == 404

        # the classes say which the page shows; average.png draws the full-size average
        assert [c["full_size"] for c in client.get(f"{base}/final/classes").json()] == [True] * 3
        assert [c["full_size"] for c in client.get(f"{base}/1/classes").json()] == [False] * 3
        for c in range(3):
            png = client.get(f"{base}/final/classes/{c + 1}/average.png").content
            assert png == thumbnail_png(full[c], 128) and png != thumbnail_png(small[c], 128)
            model = client.get(f"{base}/final/classes/{c + 1}/average.png", params={"model_size": "true"})
            assert model.content == thumbnail_png(small[c], 128)

        archive = zipfile.ZipFile(io.BytesIO(client.get(f"{base}/final/archive.zip").content))
        assert f"{job_id}_round02/class_averages_full.mrcs" in archive.namelist()
