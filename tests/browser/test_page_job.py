"""A job through the page in Debian's chromium against a real `cryoclust serve` and worker:
upload, start, watch live, explore, export, download; cancel; resume a broken event stream.

Set CRYOCLUST_SCREENSHOTS=docs to refresh docs/screenshots/ from the job view (otherwise the
screenshots go to the test's tmp folder and are only checked).
"""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
TERMINAL = {"succeeded", "failed", "cancelled"}
# Small and quick on a busy 2-core machine; still several loss points per epoch.
JOB_FORM = {
    "cluster_num": "4",
    "epoch_num": "2",
    "round_num": "2",
    "batch_size": "32",
    "size": "32",
    "device": "cpu",
}


def drop_files(page, selector: str, files: list[tuple[str, bytes]]) -> None:
    """Drop files on an element the way a drag from the file manager does."""
    payload = [[name, base64.b64encode(data).decode()] for name, data in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name));
            }
            return dt;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def loss_points(page) -> int:
    return page.evaluate(
        "() => { const gd = document.getElementById('loss-plot');"
        " return gd && gd.data ? gd.data.reduce((s, t) => s + t.x.length, 0) : 0; }"
    )


def badge(page) -> str:
    return page.evaluate("() => document.querySelector('.job-head .badge')?.textContent || ''")


def download(page, click) -> Path:
    with page.expect_download() as info:
        click()
    path = info.value.path()
    assert path and Path(path).stat().st_size > 0
    return Path(path)


def star_rows(text: str) -> int:
    """Rows of the particles table of a RELION .star file."""
    block = text.split("data_particles", 1)[1]
    rows = [
        line
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith(("_", "loop_", "#"))
    ]
    return len(rows)


def save_screenshot(page, name: str, tmp_path: Path) -> Path:
    """A full-page PNG reduced to a 256-colour palette (small enough to commit)."""
    raw = page.screenshot(full_page=True)
    with Image.open(io.BytesIO(raw)) as shot:
        image = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    folder = SCREENSHOTS if os.environ.get("CRYOCLUST_SCREENSHOTS") == "docs" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    image.save(path, optimize=True)
    return path


def test_upload_run_watch_export_download(page, server, sim_stack, tmp_path):
    """Upload by drag and drop, start a job, watch it live, explore and download the results."""
    page.goto(server.url)
    page.fill("#dataset-name", "e2e <simulated>")
    # Slow the upload down (about 2 s) to watch the progress bar with bytes and speed.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    throttle = {"offline": False, "latency": 0, "downloadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", {**throttle, "uploadThroughput": 400_000})
    drop_files(page, "#dropzone", [("particles.mrcs", sim_stack.mrcs.read_bytes())])
    progress = page.locator("#upload-text")
    expect(progress).to_have_text(
        re.compile(r"^[1-9][\d.]* kB of 82\d kB · [\d.]+ kB/s$")
    )  # file + form fields
    assert float(page.locator("#upload-progress").evaluate("el => el.value")) > 0
    expect(page.locator("#upload-files")).to_have_text("particles.mrcs")
    expect(page.locator("#upload-status")).to_be_hidden()
    cdp.send("Network.emulateNetworkConditions", {**throttle, "uploadThroughput": -1})
    card = page.locator(".dataset-card", has_text="e2e <simulated>")
    expect(card).to_contain_text("200 particles")
    expect(card).to_contain_text("box 32 px")
    expect(card).to_contain_text("2.000 Å/px")
    expect(card.locator(".thumb-strip img")).to_have_count(10)
    card.locator(".thumb-strip img").last.scroll_into_view_if_needed()
    page.wait_for_function(
        "(card) => [...card.querySelectorAll('img')].every((i) => i.complete && i.naturalWidth > 0)",
        arg=card.element_handle(),
    )
    # The new dataset is chosen in the form; start a small job on the CPU.
    assert page.locator("#job-dataset option:checked").inner_text().startswith("e2e <simulated>")
    for field, value in JOB_FORM.items():
        page.fill(f"#job-{field}", value)
    page.set_checked("#job-umap", False)  # spares the worker UMAP's compilation (test_page_embedding has it)
    page.select_option("#job-method", "pose")  # the network: many loss points a round, and epochs
    page.click("#job-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/jobs/\w+$"))
    job_id = page.url.rsplit("/", 1)[1]

    # Loss points arrive while the job runs, growing point by point.
    seen_running: list[int] = []
    round_lines: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, points = badge(page), loss_points(page)
        if status == "running" and points:
            seen_running.append(points)
            round_lines.add(page.locator("#job-round").inner_text())
        if status in TERMINAL:
            break
        time.sleep(0.1)
    assert badge(page) == "succeeded", page.locator(".job-head").inner_text()
    assert len(set(seen_running)) >= 2 and max(seen_running) > min(seen_running), (
        f"loss counts while running: {seen_running}"
    )
    expect(page.locator("#live-state")).to_have_text("finished")
    expect(page.locator("#job-round")).to_have_text("round 2/2")
    # While it trains, the round line names the epoch out of the round's own (pose: min(2, 5)).
    assert any(re.fullmatch(r"round [12]/2 · epoch [12]/2", line) for line in round_lines), round_lines

    with server.client() as client:
        history = client.get(f"/api/jobs/{job_id}/loss").json()
        classes = {
            c["class"]: c["count"] for c in client.get(f"/api/jobs/{job_id}/rounds/final/classes").json()
        }
    # One trace per round with every point once: the live stream (throttled by the worker)
    # is completed from each round's loss history, without duplicates.
    expected = [[f"round {r['round']}", len(r["points"])] for r in history["rounds"]]
    assert len(expected) == 2
    page.wait_for_function(
        "(expected) => JSON.stringify(document.getElementById('loss-plot').data.map((t) => [t.name, t.x.length]))"
        " === JSON.stringify(expected)",
        arg=expected,
    )
    steps = page.evaluate(
        "() => document.getElementById('loss-plot').data.map((t) => t.text.map((s) => +s.split(' ')[1]))"
    )
    assert steps == [[p["step"] for p in r["points"]] for r in history["rounds"]]

    # Convergence beside the loss: churn per round (a line) and the class sizes (stacked bars).
    page.wait_for_function(
        "() => (document.getElementById('convergence-plot').data || []).some((t) => t.name === 'churn' && t.x.length === 2)"
    )
    convergence = page.evaluate(
        "() => document.getElementById('convergence-plot').data.map((t) => [t.name, t.x, t.y])"
    )
    churn = next(t for t in convergence if t[0] == "churn")
    assert churn[1] == [1, 2] and all(0 <= c <= 1 for c in churn[2])
    bars = [t for t in convergence if t[0].startswith("class ")]
    assert [sum(t[2][i] for t in bars) for i in range(2)] == [200, 200]
    assert {int(t[0].split()[1]): t[2][1] for t in bars} == classes

    # Seconds per stage under it: preprocessing and initial labels in round 1, every round's own.
    table = page.locator("#stage-timings table")
    expect(table.locator("tbody tr")).to_have_count(2)
    header = table.locator("thead th").all_inner_texts()
    assert header[:3] == ["round", "preprocess", "initial labels"] and header[-1] == "total", header
    assert {"train + embed", "KMeans", "averages"} <= set(header)
    first, second = (row.locator("td").all_inner_texts() for row in table.locator("tbody tr").all())
    assert first[0] == "1" and first[1].endswith(" s") and first[2].endswith(" s")
    assert second[0] == "2" and second[1] == second[2] == "–" and second[-1].endswith(" s")

    # The scatter of the last round: every particle once, coloured by class.
    expect(page.locator("#scatter-plot")).to_have_attribute("data-round", "2")
    expect(page.locator("#gallery-grid")).to_have_attribute("data-round", "2")
    counts = page.evaluate(
        "() => document.getElementById('scatter-plot').data.map((t) => [t.name, t.x.length, t.type])"
    )
    assert sum(n for _, n, _ in counts) == sim_stack.n
    assert {t for _, _, t in counts} == {"scattergl"}
    assert {name: n for name, n, _ in counts} == {f"class {c}": n for c, n in classes.items()}
    expect(page.locator("#round-label")).to_have_text("2 of 2")

    # Hovering a point shows that particle's thumbnail and index.
    x, y = page.evaluate(
        """() => { const gd = document.getElementById('scatter-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, t = gd.data[0];
            const box = gd.getBoundingClientRect();
            return [box.left + xa._offset + xa.l2p(t.x[0]), box.top + ya._offset + ya.l2p(t.y[0])]; }"""
    )
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y)
    preview = page.locator("#hover-preview")
    expect(preview).to_be_visible()
    expect(preview).to_contain_text(re.compile(r"particle \d+ · class \d+"))
    page.wait_for_function(
        "() => { const i = document.querySelector('#hover-preview img'); return i.complete && i.naturalWidth > 0; }"
    )
    assert re.search(r"/particles/\d+\.png", page.locator("#hover-preview img").get_attribute("src"))
    hovered, hovered_class = map(
        int, re.search(r"particle (\d+) · class (\d+)", preview.inner_text()).groups()
    )
    with server.client() as client:
        embedding = client.get(f"/api/jobs/{job_id}/rounds/final/embedding").json()
    assert embedding["labels"][hovered] == hovered_class
    assert (
        page.locator("#hover-preview img")
        .get_attribute("src")
        .split("?")[0]
        .endswith(f"/particles/{hovered}.png")
    )

    # Gallery sorted by size with counts and percentages.
    cards = page.locator(".class-card")
    expect(cards).to_have_count(4)
    shown = [int(c) for c in cards.evaluate_all("els => els.map((e) => e.dataset.cls)")]
    assert [classes[c] for c in shown] == sorted(classes.values(), reverse=True)
    first = shown[0]
    expect(cards.first).to_contain_text(f"{classes[first]} · {100 * classes[first] / sim_stack.n:.1f}%")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.class-card img')].every((i) => i.complete && i.naturalWidth > 0)"
    )

    # By quality: the smallest FRC resolution first (when the engine could measure one).
    with server.client() as client:
        quality = {
            c["class"]: c.get("quality")
            for c in client.get(f"/api/jobs/{job_id}/rounds/final/classes").json()
        }
    if any(q is not None for q in quality.values()):
        page.select_option("#gallery-sort", "quality")
        order = [int(c) for c in cards.evaluate_all("els => els.map((e) => e.dataset.cls)")]
        known = [quality[c] for c in order if quality[c] is not None]
        assert known == sorted(known) and order[: len(known)] == [c for c in order if quality[c] is not None]
        page.select_option("#gallery-sort", "size")
        shown = [int(c) for c in cards.evaluate_all("els => els.map((e) => e.dataset.cls)")]

    # Click a class: a page of its members.
    cards.first.locator(".class-image").click()
    members = page.locator("#members .member img")
    expect(members).to_have_count(min(60, classes[first]))
    expect(page.locator("#members h3")).to_have_text(
        f"Class {first}: particles 1–{min(60, classes[first])} of {classes[first]}"
    )

    # The round slider steps back to round 1.
    page.locator("#round-slider").evaluate(
        "(el) => { el.value = '1'; el.dispatchEvent(new Event('input')); }"
    )
    expect(page.locator("#round-label")).to_have_text("1 of 2")
    expect(page.locator("#gallery-grid")).to_have_attribute("data-round", "1")
    expect(page.locator("#members")).to_be_hidden()  # another round, other members
    expect(page.locator("#gallery-panel h3").first).to_have_text("Class averages, round 1")
    page.locator("#round-slider").evaluate(
        "(el) => { el.value = '2'; el.dispatchEvent(new Event('input')); }"
    )
    expect(page.locator("#round-label")).to_have_text("2 of 2")
    expect(page.locator("#gallery-grid")).to_have_attribute("data-round", "2")
    expect(cards).to_have_count(4)
    # the finished job's last round: the gallery shows its full-size averages
    expect(page.locator("#gallery-panel h3").first).to_have_text("Class averages, round 2 · full size")
    expect(cards.first.locator("img")).to_have_attribute("src", re.compile(r"average\.png\?full=1$"))

    # Tick two classes and export them as .star and as .mrcs.
    ticked = shown[:2]
    for cls in ticked:
        page.locator(f".class-card[data-cls='{cls}'] input[type=checkbox]").check()
    chosen = sum(classes[c] for c in ticked)
    export = page.locator("#subset-export")
    expect(export).to_have_text(f"Export 2 classes ({chosen} particles)")
    star = download(page, export.click)
    text = star.read_text()
    assert "_rlnImageName" in text and "_rlnClassNumber" in text
    assert star_rows(text) == chosen
    page.select_option("#subset-format", "mrcs")
    expect(page.locator("#subset-note")).to_contain_text("Saved")
    expect(export).to_be_enabled()
    subset = download(page, export.click)
    with mrcfile.open(subset, permissive=False) as mrc:
        assert mrc.data.shape == (chosen, sim_stack.box, sim_stack.box)
    expect(page.locator("#subset-note")).to_contain_text("Saved")

    # Downloads of the round: class averages (.mrcs, PNG), labels CSV; the final RELION star.
    averages = download(
        page, page.locator("#downloads a", has_text="Class averages at the model size (.mrcs)").click
    )
    with mrcfile.open(averages, permissive=False) as mrc:
        assert mrc.data.shape[0] == 4  # nz = number of classes
        assert int(mrc.header.mode) == 2
        assert mrc.voxel_size.x == pytest.approx(
            sim_stack.pixel_size * sim_stack.box / mrc.data.shape[-1], rel=1e-3
        )
        assert np.isfinite(mrc.data).all()
    # the last round's default download is at the input's box and pixel size (every method)
    expect(page.locator("#downloads a", has_text="Class averages (.mrcs)")).to_contain_text("full size")
    full = download(page, page.locator("#downloads a", has_text="Class averages (.mrcs)").click)
    with mrcfile.open(full, permissive=False) as mrc:
        assert mrc.data.shape == (4, sim_stack.box, sim_stack.box)
        assert mrc.voxel_size.x == pytest.approx(sim_stack.pixel_size, rel=1e-3)
        assert np.isfinite(mrc.data).all()
    png = download(page, page.locator("#downloads a", has_text="Class averages (PNG)").click)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = list(
        csv.DictReader(
            io.StringIO(
                download(page, page.locator("#downloads a", has_text="Labels (CSV)").click).read_text()
            )
        )
    )
    assert len(labels) == sim_stack.n and {int(r["class"]) for r in labels} == set(classes)
    final_star = download(page, page.locator("#downloads a", has_text="RELION .star").click).read_text()
    assert star_rows(final_star) == sim_stack.n and "_rlnClassNumber" in final_star

    # Screenshots at 1280 and 800 px; nothing spills sideways at 800.
    page.mouse.move(5, 5)
    shot = save_screenshot(page, "job-view-1280.png", tmp_path)
    with Image.open(shot) as image:
        assert image.size[0] == 1280
    page.set_viewport_size({"width": 800, "height": 900})
    page.wait_for_timeout(400)  # Plotly's responsive resize
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    plot_width = page.evaluate("document.getElementById('scatter-plot').getBoundingClientRect().width")
    assert 600 < plot_width <= 800
    shot = save_screenshot(page, "job-view-800.png", tmp_path)
    with Image.open(shot) as image:
        assert image.size[0] == 800

    # Back on the list (still 800 px wide: nothing spills sideways): the finished job with its
    # rounds and progress; delete it.
    page.click("a.back")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("2/2")
    expect(row).to_contain_text("100%")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Delete").click()
    expect(row).to_have_count(0)
    with server.client() as client:
        assert client.get(f"/api/jobs/{job_id}").status_code == 404


def test_cancel_from_the_list_and_from_the_job_view(page, server, sim_stack):
    """A queued job is cancelled from the jobs list, a running one from its live view."""
    long_job = {
        "method": "reference",
        "epoch_num": 1000,
        "round_num": 1,
        "size": 32,
        "device": "cpu",
        "batch_size": 32,
    }
    with server.client() as client:
        dataset = client.post(
            "/api/datasets",
            files={"files": ("long.mrcs", sim_stack.mrcs.read_bytes())},
            data={"name": "cancel me"},
        ).json()
        running = client.post("/api/jobs", json={"dataset_id": dataset["id"], **long_job}).json()
        queued = client.post("/api/jobs", json={"dataset_id": dataset["id"], **long_job}).json()
    page.goto(f"{server.url}/#/jobs/{running['id']}")
    expect(page.locator(".job-head .badge")).to_have_text("running", timeout=60_000)
    page.wait_for_function(
        "() => document.getElementById('loss-plot').data.reduce((s, t) => s + t.x.length, 0) > 2"
    )
    expect(page.locator("#live-state")).to_have_text("live")

    page.click("a.back")
    row = page.locator(f"tr[data-job-id='{queued['id']}']")
    expect(row).to_contain_text("queued")
    row.locator("button", has_text="Cancel").click()
    expect(row).to_contain_text("cancelled")
    expect(row.locator("button", has_text="Delete")).to_be_visible()

    page.locator(f"tr[data-job-id='{running['id']}'] a").click()
    expect(page.locator(".job-head .badge")).to_have_text("running")
    page.click("#job-cancel")
    expect(page.locator(".job-head .badge")).to_have_text("cancelled", timeout=30_000)
    expect(page.locator("#live-state")).to_have_text("finished")
    expect(page.locator("#job-delete")).to_be_visible()


def test_live_view_resumes_after_the_stream_breaks(page, server, sim_stack):
    """The event stream breaks halfway (a proxy cut); the browser reconnects with Last-Event-ID."""
    with server.client() as client:
        dataset = client.post(
            "/api/datasets",
            files={"files": ("blip.mrcs", sim_stack.mrcs.read_bytes())},
            data={"name": "blip"},
        ).json()
        job = client.post(
            "/api/jobs",
            json={
                "dataset_id": dataset["id"],
                "epoch_num": 1,
                "round_num": 2,
                "size": 32,
                "device": "cpu",
                "batch_size": 32,
                "umap": False,
            },
        ).json()
        deadline = time.monotonic() + 90
        while (
            client.get(f"/api/jobs/{job['id']}").json()["status"] not in TERMINAL
            and time.monotonic() < deadline
        ):
            time.sleep(0.3)
        assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "succeeded"
        stream = client.get(f"/api/jobs/{job['id']}/events").text
        history = client.get(f"/api/jobs/{job['id']}/loss").json()
    blocks = [b for b in stream.split("\n\n") if b.startswith("id:")]
    half = blocks[: len(blocks) // 2]
    cut_after = int(half[-1].split("\n", 1)[0].split(":", 1)[1])
    requests = []

    def events(route, request):
        requests.append(request)
        if len(requests) == 1:  # the first connection delivers half the events, then drops
            body = "\n\n".join(half) + "\n\n"
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
        else:
            route.continue_()

    page.route(re.compile(r"/api/jobs/\w+/events"), events)
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(page.locator("#live-state")).to_have_text("finished")
    assert len(requests) == 2
    resumed = re.search(r"[?&]last_event_id=(\d+)", requests[1].url)
    assert resumed and int(resumed.group(1)) == cut_after, requests[1].url
    expected = [[f"round {r['round']}", len(r["points"])] for r in history["rounds"]]
    page.wait_for_function(
        "(expected) => JSON.stringify(document.getElementById('loss-plot').data.map((t) => [t.name, t.x.length]))"
        " === JSON.stringify(expected)",
        arg=expected,
    )
    expect(page.locator(".job-head .badge")).to_have_text("succeeded")
