"""The embedding at scale in Debian's chromium: the binary form decodes in the page to exactly
the server's float32 file, the job view asks for it, and 300,000 particles are drawn as a
class-coloured density with a hover sample (not timed here: benchmarks/page_embedding.py
measures it)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect
from support.api import wait_for_job

from worker.engine.outputs import UMAP_FILE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY_JOB = {"cluster_num": 3, "epoch_num": 1, "round_num": 1, "batch_size": 32, "size": 16, "device": "cpu"}
# The PCA view only: UMAP (numba compiles it once per worker) is the toggle test's.
PCA_ONLY = {**TINY_JOB, "umap": False}


def test_binary_embedding_decodes_in_the_page_to_the_servers_values(page, server, sim_stack):
    with server.client() as client:
        response = client.post("/api/datasets", files={"files": ("emb.mrcs", sim_stack.mrcs.read_bytes())})
        assert response.status_code == 201, response.text
        job = client.post("/api/jobs", json={"dataset_id": response.json()["id"], **PCA_ONLY}).json()
        assert wait_for_job(client, job["id"], timeout=180)["status"] == "succeeded"
        sent = client.get(f"/api/jobs/{job['id']}/rounds/1/embedding", params={"format": "binary"})
    assert sent.headers["content-type"] == "application/octet-stream"
    assert sent.headers["x-embedding-count"] == str(sim_stack.n)
    folder = server.data_dir / "jobs" / job["id"] / "round_01"
    xy = np.load(folder / "embedding_2d.npy")
    classes = np.loadtxt(folder / "labels.csv", delimiter=",", skiprows=1, usecols=2, dtype=np.int64)

    # The job view fetches the binary form, not the JSON lists.
    with page.expect_response(re.compile(r"/rounds/1/embedding\?format=binary$")) as answer:
        page.goto(f"{server.url}/#/jobs/{job['id']}")
    assert answer.value.headers["content-type"] == "application/octet-stream"
    expect(page.locator("#scatter-plot")).to_have_attribute("data-drawing", "points")
    expect(page.locator("#scatter-plot")).to_have_attribute("data-round", "1")

    decoded = page.evaluate(
        """async (jobId) => {
            const { fetchEmbedding } = await import('/static/js/embedding.js');
            const e = await fetchEmbedding(jobId, 1);
            return { n: e.n, k: e.k, x: Array.from(e.x), y: Array.from(e.y), labels: Array.from(e.labels),
                     types: [e.x.constructor.name, e.labels.constructor.name] };
        }""",
        job["id"],
    )
    assert decoded["n"] == sim_stack.n and decoded["k"] == classes.max()
    assert decoded["types"] == ["Float32Array", "Uint16Array"]
    np.testing.assert_array_equal(np.asarray(decoded["x"], dtype=np.float32), xy[:, 0])
    np.testing.assert_array_equal(np.asarray(decoded["y"], dtype=np.float32), xy[:, 1])
    np.testing.assert_array_equal(decoded["labels"], classes)
    # Every particle is in the plot once.
    assert (
        page.evaluate("document.getElementById('scatter-plot').data.reduce((s, t) => s + t.x.length, 0)")
        == sim_stack.n
    )


def test_the_view_toggle_switches_the_plot_to_the_umap_layout(page, server, sim_stack):
    # The page alone is the subject: the worker's UMAP (and numba's compilation of it, most of a
    # minute per fresh worker) is test_service_umap's. The last round gets a layout of its own,
    # written where the worker writes it, different from the PCA so that the switch shows.
    job_params = {"method": "invariant", "cluster_num": 4, "round_num": 2, "size": 16, "device": "cpu"}
    with server.client() as client:
        response = client.post("/api/datasets", files={"files": ("umap.mrcs", sim_stack.mrcs.read_bytes())})
        assert response.status_code == 201, response.text
        job = client.post(
            "/api/jobs", json={"dataset_id": response.json()["id"], **job_params, "umap": False}
        ).json()
        assert wait_for_job(client, job["id"], timeout=240)["status"] == "succeeded"
    folder = server.data_dir / "jobs" / job["id"] / "round_02"
    pca = np.load(folder / "embedding_2d.npy")
    layout = (3 * pca[:, ::-1] + 1).astype(np.float32)
    np.save(folder / "layout.tmp.npy", layout)
    (folder / "layout.tmp.npy").rename(folder / UMAP_FILE)
    plot, pca_button, umap_button = (
        page.locator("#scatter-plot"),
        page.locator("#view-pca"),
        page.locator("#view-umap"),
    )

    def plotted_x():
        """Every x the plot holds, sorted (the traces hold the particles class by class)."""
        xs = page.evaluate("document.getElementById('scatter-plot').data.flatMap((t) => Array.from(t.x))")
        return np.sort(np.asarray(xs, dtype=np.float32))

    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(plot).to_have_attribute("data-round", "2")
    expect(plot).to_have_attribute("data-view", "pca")
    expect(umap_button).to_be_enabled()
    expect(pca_button).to_have_attribute("aria-pressed", "true")
    np.testing.assert_array_equal(plotted_x(), np.sort(pca[:, 0]))

    with page.expect_response(re.compile(r"/rounds/2/embedding\?format=binary&view=umap$")):
        umap_button.click()
    expect(plot).to_have_attribute("data-view", "umap")
    expect(umap_button).to_have_attribute("aria-pressed", "true")
    expect(pca_button).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#scatter-note")).to_contain_text("UMAP layout")
    assert page.evaluate("document.getElementById('scatter-plot')._fullLayout.xaxis.title.text") == "UMAP 1"
    np.testing.assert_array_equal(plotted_x(), np.sort(layout[:, 0]))

    # Round 1 has no UMAP view: its PCA is shown and the toggle is off; round 2 brings UMAP back.
    page.locator("#round-slider").evaluate(
        "(el) => { el.value = '1'; el.dispatchEvent(new Event('input')); }"
    )
    expect(plot).to_have_attribute("data-round", "1")
    expect(plot).to_have_attribute("data-view", "pca")
    expect(umap_button).to_be_disabled()
    page.locator("#round-slider").evaluate(
        "(el) => { el.value = '2'; el.dispatchEvent(new Event('input')); }"
    )
    expect(plot).to_have_attribute("data-round", "2")
    expect(plot).to_have_attribute("data-view", "umap")
    pca_button.click()
    expect(plot).to_have_attribute("data-view", "pca")
    np.testing.assert_array_equal(plotted_x(), np.sort(pca[:, 0]))


def test_300000_particles_are_drawn_as_a_density_with_a_hover_sample(page, server):
    page.goto(server.url)
    page.wait_for_function("() => typeof window.Plotly === 'object'")
    drawn = page.evaluate(
        """async () => {
            const { EmbeddingScatter, HOVER_SAMPLE } = await import('/static/js/scatter.js');
            const host = document.createElement('div');
            host.className = 'scatter-wrap';
            host.style.width = '900px';
            const plot = document.createElement('div');
            plot.id = 'huge-scatter';
            plot.style.height = '400px';
            const preview = document.createElement('div');
            preview.className = 'hover-preview';
            preview.hidden = true;
            const caption = document.createElement('span');
            caption.className = 'preview-caption';
            preview.append(document.createElement('img'), caption);
            host.append(plot, preview);
            document.body.prepend(host);
            const n = 300000, x = new Float32Array(n), y = new Float32Array(n), labels = new Uint16Array(n);
            let seed = 11;
            const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
            for (let i = 0; i < n; i++) {
                const c = i % 12;
                labels[i] = c + 1;
                x[i] = Math.cos(c) * 6 + (rand() - 0.5) * 3;
                y[i] = Math.sin(c) * 6 + (rand() - 0.5) * 3;
            }
            const PIXEL = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==';
            await new EmbeddingScatter(plot, preview, { thumbnailUrl: () => PIXEL }).show({ n, x, y, labels }, 1);
            window.__huge = { labels };
            const layout = plot._fullLayout;
            return { drawing: plot.dataset.drawing, sample: HOVER_SAMPLE, traces: plot.data.length,
                     points: plot.data.reduce((s, t) => s + t.x.length, 0),
                     image: layout.images.length ? layout.images[0].source.slice(0, 22) : null };
        }"""
    )
    assert drawn["drawing"] == "density" and drawn["traces"] == 12
    assert drawn["points"] == drawn["sample"] < 300000
    assert drawn["image"] == "data:image/png;base64,"
    # Hover one sampled point: the caption names it, with the class the data gives it.
    x, y, index = page.evaluate(
        """() => { const gd = document.getElementById('huge-scatter');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, t = gd.data[5];
            const box = gd.getBoundingClientRect();
            return [box.left + xa._offset + xa.l2p(t.x[0]), box.top + ya._offset + ya.l2p(t.y[0]), t.customdata[0]]; }"""
    )
    page.mouse.move(x + 30, y + 30)
    page.mouse.move(x, y)
    caption = page.locator(".scatter-wrap .preview-caption").first
    expect(caption).to_contain_text(re.compile(r"particle \d+ · class \d+"))
    shown, cls = map(int, re.findall(r"\d+", caption.text_content()))
    assert cls == page.evaluate(f"window.__huge.labels[{shown}]")
    assert page.evaluate(f"window.__huge.labels[{index}]") == 6
    # Hiding a class redraws the density without it (the image changes).
    before = page.evaluate("document.getElementById('huge-scatter')._fullLayout.images[0].source")
    page.evaluate("Plotly.restyle('huge-scatter', {visible: 'legendonly'}, [0])")
    page.wait_for_function(
        "(before) => document.getElementById('huge-scatter')._fullLayout.images[0].source !== before",
        arg=before,
    )
