"""The page in Debian's chromium against a real `cryoclust serve`: uploads and their errors,
the job form's checks, the scatter with 50,000 particles, no HTML from strings."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from worker.engine.config import BY_NAME, PARAMETERS, default

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend"


def test_page_never_writes_html_from_strings():
    """Untrusted text only goes in as text: no innerHTML & co. anywhere in the page's code."""
    sources = {p.name: p.read_text() for p in (FRONTEND / "js").glob("*.js")}
    assert "main.js" in sources and "jobview.js" in sources
    for name, text in sources.items():
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{name} uses {sink}"


def test_bad_upload_shows_the_server_message_as_text(page, server, console):
    console.allow(r"status of 4\d\d")  # the browser logs the failed upload request itself
    page.goto(server.url)
    expect(page.locator("#jobs-list")).to_contain_text(re.compile("No jobs yet|Job"))
    # A file the browser can refuse by name never reaches the server.
    page.set_input_files(
        "#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}]
    )
    expect(page.locator("#upload-error")).to_contain_text("Not a particle file")

    bad = b"<b>not</b> an MRC file" * 3
    name = "bad<img src=x onerror=alert(1)>.mrcs"
    with server.client() as client:
        expected = client.post("/api/datasets", files={"files": (name, bad)}).json()["detail"]
    page.set_input_files(
        "#file-input", files=[{"name": name, "mimeType": "application/octet-stream", "buffer": bad}]
    )
    error = page.locator("#upload-error")
    expect(error).to_have_text(expected)
    assert error.evaluate("el => el.children.length") == 0, "the message was parsed as HTML"
    assert page.locator("img[src='x']").count() == 0
    expect(page.locator("#upload-status")).to_be_hidden()


def test_job_form_checks_ranges_like_the_api(page, server, sim_stack):
    with server.client() as client:
        response = client.post(
            "/api/datasets",
            files={"files": ("form.mrcs", sim_stack.mrcs.read_bytes())},
            data={"name": "form check"},
        )
        assert response.status_code == 201, response.text
        dataset_id = response.json()["id"]
    page.goto(server.url)
    page.select_option("#job-dataset", dataset_id)
    submit = page.locator("#job-form button[type=submit]")
    expect(submit).to_be_enabled()
    defaults = {
        name: str(default(name))
        for name in ("cluster_num", "learning_rate", "epoch_num", "batch_size", "round_num", "size", "seed")
    }
    for field, value in defaults.items():
        expect(page.locator(f"#job-{field}")).to_have_value(value)
    expect(page.locator("#job-method")).to_have_value("pose")  # the method that passes every bar
    offered = page.locator("#job-method option").evaluate_all("options => options.map(o => o.value)")
    assert offered == ["reference", "invariant", "pose", "pose-em"]
    # The "auto" options are shown as auto, with the rule that decides them.
    for field in ("phase_flip", "align_averages"):
        expect(page.locator(f"#job-{field}")).to_have_value("auto")
        expect(page.locator(f"#job-{field} option:checked")).to_have_text(f"auto: {BY_NAME[field].auto}")
    expect(page.locator("#job-device")).to_have_value("")
    expect(page.locator("#job-device")).to_have_attribute("placeholder", f"auto: {BY_NAME['device'].auto}")
    # a number left to the run: empty, with its rule as the placeholder
    expect(page.locator("#job-mask_diameter")).to_have_value("")
    expect(page.locator("#job-mask_diameter")).to_have_attribute(
        "placeholder", f"auto: {BY_NAME['mask_diameter'].auto}"
    )
    assert page.locator("#job-form .help").count() == len(PARAMETERS) + 1  # a line of help for every field

    cases = [
        ("cluster_num", "1", "at least 2"),
        ("cluster_num", "201", "at most 200"),
        ("learning_rate", "0", "above 0"),
        ("epoch_num", "0", "at least 1"),
        ("batch_size", "1", "at least 2"),
        ("round_num", "101", "at most 100"),
        ("size", "33", "even"),
        ("size", "4", "at least 8"),
        ("seed", "-1", "at least 0"),
        ("device", "gpu", "cuda:N"),
        ("mask_diameter", "0", "above 0"),
    ]
    for field, value, message in cases:
        page.fill(f"#job-{field}", value)
        error = (
            page.locator(f"#job-{field}")
            .locator("xpath=ancestor::div[contains(@class,'field')][1]")
            .locator(".field-error")
        )
        expect(error).to_contain_text(message)
        expect(submit).to_be_disabled()
        page.click("#job-form button:has-text('Defaults')")
        expect(submit).to_be_enabled()


def test_star_with_its_stack_uploads_as_one_dataset(page, server, sim_stack):
    page.goto(server.url)
    page.fill("#dataset-name", "star and stack")
    page.set_input_files("#file-input", [sim_stack.star, sim_stack.mrcs])
    card = page.locator(".dataset-card", has_text="star and stack")
    expect(card).to_contain_text("200 particles")
    expect(card.locator(".files")).to_contain_text("particles.star")
    expect(card.locator(".files")).to_contain_text("particles.mrcs")
    expect(page.locator("#upload-error")).to_be_hidden()


def test_scatter_stays_responsive_with_50000_points(page, server):
    """The page's own scatter module draws 50,000 particles with WebGL and answers hovers."""
    page.goto(server.url)
    page.wait_for_function("() => typeof window.Plotly === 'object'")
    timings = page.evaluate(
        """async () => {
            const { EmbeddingScatter } = await import('/static/js/scatter.js');
            const host = document.createElement('div');
            host.className = 'scatter-wrap';
            host.style.width = '900px';
            const plot = document.createElement('div');
            plot.id = 'big-scatter';
            plot.style.height = '400px';
            const preview = document.createElement('div');
            preview.className = 'hover-preview';
            preview.hidden = true;
            const img = document.createElement('img');
            const caption = document.createElement('span');
            caption.className = 'preview-caption';
            preview.append(img, caption);
            host.append(plot, preview);
            document.body.prepend(host);
            const n = 50000, x = new Array(n), y = new Array(n), labels = new Array(n);
            let seed = 7;
            const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
            for (let i = 0; i < n; i++) {
                const c = i % 10;
                labels[i] = c + 1;
                x[i] = Math.cos(c) * 5 + (rand() - 0.5) * 2;
                y[i] = Math.sin(c) * 5 + (rand() - 0.5) * 2;
            }
            const PIXEL = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==';
            const scatter = new EmbeddingScatter(plot, preview, { thumbnailUrl: () => PIXEL });
            let t0 = performance.now();
            await scatter.show({ x, y, labels }, 1);
            const first = performance.now() - t0;
            for (let i = 0; i < n; i++) labels[i] = ((i * 7) % 10) + 1;
            t0 = performance.now();
            await scatter.show({ x, y, labels }, 2);
            const second = performance.now() - t0;
            window.__bigScatter = scatter;
            return { first, second, points: plot.data.reduce((s, t) => s + t.x.length, 0), traces: plot.data.length };
        }"""
    )
    assert timings["points"] == 50000 and timings["traces"] == 10
    assert timings["first"] < 8000 and timings["second"] < 8000, timings
    # A hover is answered quickly: the page's main thread is free.
    x, y = page.evaluate(
        """() => { const gd = document.getElementById('big-scatter');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, t = gd.data[3];
            const box = gd.getBoundingClientRect();
            return [box.left + xa._offset + xa.l2p(t.x[0]), box.top + ya._offset + ya.l2p(t.y[0])]; }"""
    )
    started = time.monotonic()
    page.mouse.move(x + 20, y + 20)
    page.mouse.move(x, y)
    expect(page.locator(".scatter-wrap .preview-caption").first).to_contain_text(
        re.compile(r"particle \d+ · class \d+")
    )
    assert time.monotonic() - started < 5
    elapsed = page.evaluate(
        "async () => { const t = performance.now(); await new Promise((r) => setTimeout(r, 0)); return performance.now() - t; }"
    )
    assert elapsed < 200
