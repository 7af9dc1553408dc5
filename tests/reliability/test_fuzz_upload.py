"""Property-based tests of the HTTP API against a real server (uvicorn, SQLite, filesystem queue).

Damaged stacks, hostile file names, stars that point outside the upload, raw garbage bodies,
and job parameters of every wrong type and range. Every answer is 2xx or 4xx with a readable
`detail` (never 500); after every request no partial file is left under DATA_DIR, every dataset
folder has its row and every row its folder, and every job created can be cancelled (none stuck).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.api import running_api
from support.fuzz import OUTSIDE, mutate, mutations, star_texts, valid_stacks
from support.settings import make_settings
from support.stacks import mrc_bytes, write_stack

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEED_PARTICLES = 12


def leftovers(data_dir: Path) -> list[str]:
    """Files left in DATA_DIR/tmp (an upload in progress leaves them only while it runs)."""
    tmp = data_dir / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


@pytest.fixture(scope="module")
def server():
    root = Path(tempfile.mkdtemp(prefix="fuzz-upload-"))
    with running_api(make_settings(root / "data")) as api:
        with api.client() as client:
            stack = write_stack(root / "seed" / "seed.mrcs", n=SEED_PARTICLES, box=16)
            response = client.post("/api/datasets", files=[("files", (stack.name, stack.read_bytes()))])
            assert response.status_code == 201, response.text
            api.seed = response.json()
            api.root = root
            api.http = client
            yield api
    shutil.rmtree(root, ignore_errors=True)


def assert_clean_answer(response: httpx.Response, allowed=range(200, 500)) -> None:
    """2xx, or 4xx with a readable detail; never a server error."""
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert detail and (isinstance(detail, str) or isinstance(detail, list)), response.text


def assert_consistent(api) -> None:
    """No partial upload left; dataset folders and rows match one to one."""
    data_dir = api.settings.data_dir
    assert leftovers(data_dir) == []
    rows = {d["id"] for d in api.http.get("/api/datasets").json()}
    folders = {p.name for p in (data_dir / "datasets").iterdir()}
    assert rows == folders
    for dataset_id in rows:
        assert not list((data_dir / "datasets" / dataset_id).glob(".*")), "hidden partial files"


def forget(api, response: httpx.Response) -> None:
    """Delete a dataset the fuzzer managed to upload, so the next example starts alike."""
    if response.status_code == 201:
        assert api.http.delete(f"/api/datasets/{response.json()['id']}").status_code == 204


def post_files(api, files: list[tuple[str, bytes]]) -> httpx.Response:
    return api.http.post("/api/datasets", files=[("files", (name, data)) for name, data in files])


@FUZZ
@given(images=valid_stacks(), steps=mutations(), name=st.sampled_from(["p.mrcs", "p.mrc", "P.MRCS"]))
def test_damaged_stacks_get_4xx_and_leave_nothing(server, images, steps, name):
    with tempfile.TemporaryDirectory() as folder:
        body = mutate(mrc_bytes(images, Path(folder)), steps)
    response = post_files(server, [(name, body)])
    assert_clean_answer(response, allowed=(201, 400, 413, 415))
    if response.status_code == 201:
        dataset = response.json()
        assert dataset["n_particles"] >= 1 and dataset["size_bytes"] == len(body)
    assert_consistent(server)
    forget(server, response)


NAME_PARTS = st.sampled_from(
    [
        "..",
        ".",
        "/",
        "\\",
        "../",
        "..\\",
        "~",
        "%2e%2e",
        "\x00",
        "\n",
        "\r",
        '"',
        "'",
        ";",
        " ",
        "*",
        "?",
        ":",
        "é",
        "名",
        "\u202e",
        "CON",
        ".mrcs",
        ".star",
        "a",
    ]
)


@FUZZ
@given(
    parts=st.lists(NAME_PARTS | st.text(max_size=6), max_size=8),
    suffix=st.sampled_from([".mrcs", ".mrc", ".star", ".txt", "", ".mrcs/..", ".mrcs\x00.txt"]),
)
def test_hostile_file_names_never_become_paths(server, parts, suffix):
    name = "".join(parts) + suffix
    stack = (server.root / "seed" / "seed.mrcs").read_bytes()
    outside_before = sorted(p.name for p in server.root.iterdir())
    try:
        response = post_files(server, [(name, stack)])
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client itself refused to send such a name
    assert_clean_answer(response, allowed=(201, 400, 415))
    if response.status_code == 201:
        dataset = response.json()
        (stored,) = dataset["files"]
        assert "/" not in stored and "\\" not in stored and not stored.startswith(".")
        folder = server.settings.data_dir / "datasets" / dataset["id"]
        assert [p.name for p in folder.iterdir()] == [stored]
    assert sorted(p.name for p in server.root.iterdir()) == outside_before
    assert_consistent(server)
    forget(server, response)


@FUZZ
@given(data=st.data())
def test_stars_pointing_anywhere_are_checked(server, data):
    outside = server.root / OUTSIDE
    if not outside.exists():
        outside.write_bytes((server.root / "seed" / "seed.mrcs").read_bytes())
    text = data.draw(star_texts(str(outside)))
    stack = mrc_bytes(np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32), server.root)
    files = [("particles.star", text.encode("utf-8", "surrogatepass")), ("a.mrcs", stack)]
    response = post_files(server, files)
    assert_clean_answer(response, allowed=(201, 400, 415))
    if response.status_code == 201:
        dataset = response.json()
        assert set(dataset["files"]) <= {"particles.star", "a.mrcs"}
    assert_consistent(server)
    forget(server, response)


@FUZZ
@given(
    body=st.binary(max_size=2000),
    boundary=st.sampled_from(["b", "xyz", "----x"]),
    prefix=st.sampled_from(
        [b"", b"--b\r\n", b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.mrcs"\r\n\r\n']
    ),
)
def test_garbage_multipart_bodies_get_4xx(server, body, boundary, prefix):
    response = server.http.post(
        "/api/datasets",
        content=prefix + body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_clean_answer(response, allowed=(400, 413, 415))
    assert_consistent(server)


# ----------------------------------------------------------------------------- jobs API

FIELDS = [
    "method",
    "cluster_num",
    "learning_rate",
    "epoch_num",
    "batch_size",
    "round_num",
    "size",
    "seed",
    "device",
    "phase_flip",
    "align_averages",
    "dataset_id",
    "colour",
]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 3, 4, 12, 13, 63, 64, 2**31, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e-4, 5e-4, 0.5, 1.0, 1.5, 0.0]),
    st.text(max_size=12),
    st.sampled_from(["reference", "invariant", "cpu", "cuda:0", "cuda:99", "4", "1e3", "tpu"]),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@FUZZ
@given(params=st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=6), keep_dataset=st.booleans())
def test_job_parameters_of_any_type_get_201_or_4xx(server, params, keep_dataset):
    if keep_dataset:
        params["dataset_id"] = server.seed["id"]
    before = len(server.http.get("/api/jobs").json())
    response = server.http.post("/api/jobs", json=params)
    assert_clean_answer(response, allowed=(201, 404, 422))
    jobs = server.http.get("/api/jobs").json()
    if response.status_code == 201:
        job = response.json()
        assert job["status"] == "queued" and len(jobs) == before + 1
        assert 2 <= job["params"]["cluster_num"] <= server.seed["n_particles"]
        cancelled = server.http.post(f"/api/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert server.http.delete(f"/api/jobs/{job['id']}").status_code == 204
    else:
        assert len(jobs) == before, "a refused job left a row"
    assert all(
        j["status"] in ("succeeded", "failed", "cancelled") for j in server.http.get("/api/jobs").json()
    )


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"[]",
                b"null",
                b"1",
                b'"x"',
                b"{",
                b'{"learning_rate": NaN}',
                b'{"learning_rate": Infinity}',
                b'{"cluster_num": 1e999}',
                b'{"seed": -Infinity}',
                b"\xff\xfe",
            ]
        ),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_job_bodies_that_are_not_json_objects_get_4xx(server, body, content_type):
    response = server.http.post("/api/jobs", content=body, headers={"Content-Type": content_type})
    assert_clean_answer(response, allowed=(404, 415, 422, 400))
    assert server.http.get("/api/jobs").json() == []


def is_int(text: str, low: int | None = None, high: int | None = None) -> bool:
    """Whether the API's int parameter takes `text` (an integer within [low, high])."""
    try:
        value = int(text)
    except ValueError:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def expected_statuses(index: str, size: str, job: str) -> dict[str, int]:
    """The one right answer for each URL of the test below.

    422 when a parameter is not of its type or out of its range (checked before any lookup);
    404 when a well-formed reference names nothing (a particle past the end, a job that does not
    exist, or a path that, with "..", names no route at all); 200 for a particle that exists.
    """
    size_ok = size == "" or is_int(size, 16, 512)
    if index.startswith(".."):  # "..%2f..%2fetc" decodes to a path no route matches
        particle = 404
    elif not (is_int(index) and size_ok):
        particle = 422
    else:
        particle = 200 if 0 <= int(index) < SEED_PARTICLES else 404
    # httpx removes a literal "..", leaving /api/rounds/...: no such route.
    no_job = 404
    members_ok = is_int(index) and is_int(size or "-1", 0) and is_int(index, 1, 10000)
    events_ok = is_int(index, 0, 2**62)
    return {
        "particle": particle,
        "jobs": 422,  # a status is never one of these strings, and limit=0 is below 1
        "classes": no_job,
        "members": no_job if job == ".." or index.startswith("..") or members_ok else 422,
        "archive": no_job,
        "events": no_job if job == ".." or events_ok else 422,
    }


@FUZZ
@given(
    index=st.sampled_from(
        ["-1", "0", "11", "12", "99999999999999999999", "x", "1.5", "%00", "..%2f..%2fetc"]
    ),
    size=st.sampled_from(["", "16", "15", "0", "-5", "513", "99999999999", "abc", "NaN"]),
    job=st.sampled_from(["nope", "..", "%2e%2e", "a" * 300]),
    round_ref=st.sampled_from(["final", "0", "-1", "1", "x", "1e9", "%2e%2e"]),
)
def test_paths_and_queries_out_of_range_get_the_right_4xx(server, index, size, job, round_ref):
    dataset = server.seed["id"]
    query = f"?size={size}" if size else ""
    urls = {
        "particle": f"/api/datasets/{dataset}/particles/{index}.png{query}",
        "jobs": f"/api/jobs?limit={size or 0}&status={index}",
        "classes": f"/api/jobs/{job}/rounds/{round_ref}/classes",
        "members": f"/api/jobs/{job}/rounds/{round_ref}/classes/{index}/members?offset={size or -1}&limit={index}",
        "archive": f"/api/jobs/{job}/rounds/{round_ref}/archive.zip",
        "events": f"/api/jobs/{job}/events?last_event_id={index}",
    }
    expected = expected_statuses(index, size, job)
    answers = {kind: server.http.get(url) for kind, url in urls.items()}
    for response in answers.values():
        assert_clean_answer(response)
    wrong = {
        urls[k]: (r.status_code, expected[k]) for k, r in answers.items() if r.status_code != expected[k]
    }
    assert wrong == {}, "(status, right status) by URL"
    assert leftovers(server.settings.data_dir) == []


def test_nan_and_infinity_in_job_json_get_422(server):
    """Python's json accepts NaN; the error answer must still be valid JSON (not a 500)."""
    for value in (math.nan, math.inf, -math.inf):
        body = json.dumps({"dataset_id": server.seed["id"], "learning_rate": value})
        response = server.http.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert "learning_rate" in response.text
