"""How fast the job page shows a large embedding in Chromium, drawn as WebGL points or as a
density image with a hover sample; and how fast the API serves the embedding and pages of
class members at that size.

It starts `cryoclust serve --no-worker` on a temporary DATA_DIR (SQLite, no token), uploads a
small stack, and for each --sizes N adds a job whose round_01 folder it writes itself: N points
in 20 Gaussian blobs (labels.csv, embedding_2d.npy, classes.json, class averages), so no
classification has to run. Then, for each N and each drawing, a fresh Chromium page opens
`/?embedding=DRAWING#/jobs/ID` (--repeats times; medians) and it records:
  first_draw_ms    from the start of navigation to the plot drawn (two animation frames after
                   the page set the plot's round), the bar being 3 s at 300k;
  draw_ms          of which the drawing itself (grouping by class, density image, Plotly);
  long tasks       main-thread tasks over 50 ms until then (PerformanceObserver "longtask"):
                   count, total and longest;
  data_to_draw_ms  from the embedding's arrival to the plot drawn (long tasks counted after it too);
  zoom_ms          from zooming into the middle quarter to the frame drawn (density: its new image);
  hover_ms         from moving the mouse onto a point to the particle's caption showing
                   (the first hover, then the mean of five more);
  embedding fetch  the binary response's bytes and its time in the page (resource timing).
Over HTTP it also times the JSON and binary forms of the embedding and the members endpoint
(first page cold, then later pages), against the csv module's reading of labels.csv.

Example:
  .venv/bin/python benchmarks/page_embedding.py                       # 300k and 1M, both drawings
  .venv/bin/python benchmarks/page_embedding.py --sizes 300000 --drawings density --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the tests' support package starts the service

from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.processes import ServeProcess
from support.settings import child_env, make_settings
from support.stacks import write_stack as write_test_stack

from worker.engine.io.mrc import write_stack
from worker.engine.outputs import read_labels_csv, write_json, write_labels_csv

CLASSES = 20

# Installed before any script of the page runs: collects main-thread long tasks from the start.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push({start: e.startTime, duration: e.duration});
}).observe({type: "longtask", buffered: true});
"""

# Resolves once the page drew the plot: the time since navigation started, and what it knows.
DRAWN = """
async () => {
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const now = performance.now();
  const canvas = document.createElement("canvas");
  const gl = canvas.getContext("webgl");
  const info = gl && gl.getExtension("WEBGL_debug_renderer_info");
  const fetches = performance.getEntriesByType("resource").filter((e) => e.name.includes("/embedding"));
  const f = fetches[fetches.length - 1];
  const el = document.getElementById("scatter-plot");
  return {
    first_draw_ms: now,
    drawing: el.dataset.drawing,
    draw_ms: Number(el.dataset.drawMs),
    traces: el.data.length,
    points_in_traces: el.data.reduce((s, t) => s + t.x.length, 0),
    long_tasks: window.__longTasks.filter((t) => t.start < now),
    webgl_renderer: info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : null,
    fetch: f ? {bytes: f.encodedBodySize, start_ms: f.startTime, end_ms: f.responseEnd} : null,
  };
}
"""

# Zoom into the middle quarter and wait for the frame (and, for the density, its new image).
ZOOM = """
async () => {
  const el = document.getElementById("scatter-plot");
  const before = (el._fullLayout.images[0] || {}).source;
  const [x0, x1] = el._fullLayout.xaxis.range, [y0, y1] = el._fullLayout.yaxis.range;
  const start = performance.now();
  await Plotly.relayout(el, {"xaxis.range": [x0 + (x1 - x0) / 4, x1 - (x1 - x0) / 4],
                             "yaxis.range": [y0 + (y1 - y0) / 4, y1 - (y1 - y0) / 4]});
  if (el.dataset.drawing === "density") {
    while ((el._fullLayout.images[0] || {}).source === before) await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - start;
}
"""

# The page position of a point of the plot: (trace, point) -> {x, y} in CSS pixels.
POINT_AT = """
([t, p]) => {
  const el = document.getElementById("scatter-plot");
  const L = el._fullLayout, trace = el.data[t], r = el.getBoundingClientRect();
  return {x: r.left + L.xaxis._offset + L.xaxis.l2p(trace.x[p]),
          y: r.top + L.yaxis._offset + L.yaxis.l2p(trace.y[p]), index: trace.customdata[p]};
}
"""


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[300_000, 1_000_000])
    parser.add_argument("--drawings", nargs="+", default=["points", "density"], choices=["points", "density"])
    parser.add_argument(
        "--repeats", type=int, default=3, help="page loads per size and drawing (the median is kept)"
    )
    parser.add_argument("--screenshots", help="save a picture of each plot in this folder")
    parser.add_argument("--work-dir", help="where DATA_DIR goes (default: a temporary folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "page-embedding.json"))


def synthetic_round(out_dir: Path, n: int, seed: int = 0) -> np.ndarray:
    """A complete round_01 of n particles in CLASSES blobs; the labels (0-based)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-6, 6, size=(CLASSES, 2))
    weights = rng.dirichlet(np.full(CLASSES, 2.0))
    labels = rng.choice(CLASSES, size=n, p=weights)
    xy = (
        centres[labels] + rng.normal(scale=rng.uniform(0.3, 1.2, CLASSES)[labels, None], size=(n, 2))
    ).astype(np.float32)
    folder = out_dir / "round_01"
    folder.mkdir(parents=True)
    np.save(folder / "embedding_2d.npy", xy)
    write_labels_csv(folder / "labels.csv", labels, [f"{i + 1:07d}@particles.mrcs" for i in range(n)])
    counts = np.bincount(labels, minlength=CLASSES)
    write_json(
        folder / "classes.json",
        [
            {"class": c + 1, "count": int(counts[c]), "fraction": float(counts[c] / n), "quality": 8.0}
            for c in range(CLASSES)
        ],
    )
    write_stack(folder / "class_averages.mrcs", rng.normal(size=(CLASSES, 32, 32)).astype(np.float32), 2.0)
    write_json(folder / "loss.json", [])
    write_json(folder / "round.json", {"round": 1, "counts": counts.tolist()})
    return labels


def add_finished_job(client: httpx.Client, database_url: str, data_dir: Path, dataset_id: str, n: int) -> str:
    """A job row marked succeeded with a synthetic round of n particles (no worker runs it)."""
    response = client.post(
        "/api/jobs", json={"dataset_id": dataset_id, "cluster_num": 2, "round_num": 1, "device": "cpu"}
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    synthetic_round(data_dir / "jobs" / job_id, n)
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE jobs SET status='succeeded', round=1, rounds_done=1, round_num=1, progress=1.0 "
                "WHERE id=:id"
            ),
            {"id": job_id},
        )
    engine.dispose()
    return job_id


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return (time.perf_counter() - start) / repeats * 1000, result


def http_figures(client: httpx.Client, job_id: str, folder: Path) -> dict:
    base = f"/api/jobs/{job_id}/rounds/1"
    ms_json, as_json = timed(lambda: client.get(f"{base}/embedding"))
    ms_binary, as_binary = timed(lambda: client.get(f"{base}/embedding", params={"format": "binary"}), 3)
    largest = int(np.argmax(np.bincount(read_labels_csv(folder / "labels.csv")))) + 1
    members = f"{base}/classes/{largest}/members"
    # the API caches parsed labels per round folder; a fresh file identity makes the first page cold
    (folder / "labels.csv").touch()
    ms_cold, first = timed(lambda: client.get(members, params={"offset": 0, "limit": 100}))
    ms_warm, _ = timed(lambda: client.get(members, params={"offset": 5000, "limit": 100}), 10)
    ms_csv, _ = timed(lambda: read_labels_csv(folder / "labels.csv"))
    return {
        "embedding_json": {"bytes": len(as_json.content), "ms": round(ms_json)},
        "embedding_binary": {"bytes": len(as_binary.content), "ms": round(ms_binary)},
        "members_page": {
            "class_size": first.json()["total"],
            "first_page_ms": round(ms_cold),
            "later_pages_ms": round(ms_warm, 1),
            "labels_csv_with_csv_module_ms": round(ms_csv),
        },
    }


def measure_page(browser, url: str, job_id: str, drawing: str, screenshot: Path | None = None) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(LONG_TASKS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/?embedding={drawing}#/jobs/{job_id}")
    page.wait_for_selector("#scatter-plot[data-round]", state="attached", timeout=120_000)
    drawn = page.evaluate(DRAWN)
    tasks = drawn.pop("long_tasks")
    arrived = drawn["fetch"]["end_ms"] if drawn["fetch"] else 0
    drawing_tasks = [t["duration"] for t in tasks if t["start"] + t["duration"] > arrived]
    result = {
        **drawn,
        "first_draw_ms": round(drawn["first_draw_ms"]),
        "data_to_draw_ms": round(drawn["first_draw_ms"] - arrived),
        "long_tasks": len(tasks),
        "long_tasks_total_ms": round(sum(t["duration"] for t in tasks)),
        "longest_task_ms": round(max((t["duration"] for t in tasks), default=0)),
        "long_tasks_after_data_ms": round(sum(drawing_tasks)),
        "longest_task_after_data_ms": round(max(drawing_tasks, default=0)),
    }
    if screenshot:
        page.locator(".scatter-wrap").screenshot(path=str(screenshot))
    hovers = []
    caption = page.locator(".hover-preview .preview-caption")
    for attempt in range(6):
        trace = attempt % len(
            page.evaluate("document.getElementById('scatter-plot').data.map((t) => t.x.length)")
        )
        point = page.evaluate(POINT_AT, [trace, 0])
        page.mouse.move(5, 5)
        page.wait_for_timeout(150)
        start = time.perf_counter()
        page.mouse.move(point["x"], point["y"])
        caption.filter(has_text="particle").wait_for(state="visible", timeout=30_000)
        hovers.append((time.perf_counter() - start) * 1000)
    result["hover_first_ms"] = round(hovers[0])
    result["hover_ms"] = round(float(np.mean(hovers[1:])))
    result["zoom_ms"] = round(page.evaluate(ZOOM))
    result["page_errors"] = errors
    context.close()
    return result


def median_run(runs: list[dict]) -> dict:
    """Each figure's median over the runs (every run's first_draw_ms kept as well)."""
    result = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result[key] = round(float(np.median([r[key] for r in runs])), 1)
    result["first_draw_ms_runs"] = [r["first_draw_ms"] for r in runs]
    result["page_errors"] = [e for r in runs for e in r["page_errors"]]
    return result


def main(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="page-embedding-"))
    settings = make_settings(work / "data")
    serve = ServeProcess(child_env(settings), work, "--no-worker")
    serve.start()
    results = {
        "command": " ".join(["benchmarks/page_embedding.py", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "sizes": {},
    }
    try:
        with httpx.Client(base_url=serve.url, timeout=300) as client, sync_playwright() as p:
            stack = write_test_stack(work / "particles.mrcs", n=60, box=32)
            dataset = client.post(
                "/api/datasets", files=[("files", (stack.name, stack.read_bytes()))]
            ).json()["id"]
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for n in args.sizes:
                job_id = add_finished_job(client, settings.database_url, settings.data_dir, dataset, n)
                entry = {
                    "http": http_figures(client, job_id, settings.data_dir / "jobs" / job_id / "round_01")
                }
                for drawing in args.drawings:
                    picture = (
                        Path(args.screenshots) / f"embedding-{n}-{drawing}.png" if args.screenshots else None
                    )
                    runs = [
                        measure_page(browser, serve.url, job_id, drawing, picture if i == 0 else None)
                        for i in range(args.repeats)
                    ]
                    entry[drawing] = median_run(runs)
                    print(f"N={n:>9,} {drawing:8s} {json.dumps(entry[drawing])}", flush=True)
                print(f"N={n:>9,} http     {json.dumps(entry['http'])}", flush=True)
                results["sizes"][str(n)] = entry
            browser.close()
    finally:
        serve.stop()
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    main(parser.parse_args())
