// The 2-D embedding plot, coloured by class; hovering a point shows that particle's thumbnail
// beside the plot. Two ways to draw it, chosen by the number of particles (measured in
// benchmarks/page_embedding.py, see the README):
//   points   every particle as a WebGL point, one trace per class (the legend toggles classes);
//   density  a class-coloured density image of every particle, redrawn for the zoomed window,
//            under a fixed random sample of points that carries the hover.
// `?embedding=points` or `?embedding=density` in the page's URL forces one.

import { dataBounds, densityImage, sampleIndices } from "./density.js";
import { classColour, throttle } from "./dom.js";

const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
export const DENSITY_ABOVE = 100000;
export const HOVER_SAMPLE = 20000;
const MAX_IMAGE_PIXELS = 1200;

/** "points" or "density" for n particles (the URL may force one). */
export function drawingFor(n) {
  const forced = new URLSearchParams(window.location.search).get("embedding");
  if (forced === "points" || forced === "density") return forced;
  return n > DENSITY_ABOVE ? "density" : "points";
}

/** Split the particles (all, or those in `indices`) into one group per class: {cls: {x, y, index}}. */
export function splitByClass(data, indices = null) {
  const n = indices ? indices.length : data.labels.length;
  const at = indices ? (j) => indices[j] : (j) => j;
  const counts = new Map();
  for (let j = 0; j < n; j++) {
    const cls = data.labels[at(j)];
    counts.set(cls, (counts.get(cls) || 0) + 1);
  }
  const groups = new Map();
  for (const [cls, count] of counts) {
    groups.set(cls, { x: new Float32Array(count), y: new Float32Array(count), index: new Int32Array(count), fill: 0 });
  }
  for (let j = 0; j < n; j++) {
    const i = at(j);
    const g = groups.get(data.labels[i]);
    g.x[g.fill] = data.x[i];
    g.y[g.fill] = data.y[i];
    g.index[g.fill] = i;
    g.fill++;
  }
  return new Map([...groups.entries()].sort((a, b) => a[0] - b[0]));
}

export class EmbeddingScatter {
  /** thumbnailUrl(index) gives the image shown on hover. */
  constructor(el, preview, { thumbnailUrl }) {
    this.el = el;
    this.preview = preview;
    this.thumbnailUrl = thumbnailUrl;
    this.plotted = false;
    this.previewImg = preview.querySelector("img");
    this.previewText = preview.querySelector(".preview-caption");
    // Loading one image per hovered point would flood the server while the mouse moves.
    this.loadThumbnail = throttle((index) => {
      this.previewImg.src = this.thumbnailUrl(index);
    }, 80);
    this.redrawDensity = throttle(() => this.drawDensity(), 120);
  }

  /** Draw round `round` of a decoded embedding ({n, x, y, labels, view}, see embedding.js); the
   * same drawing for either view, with the view's axis names. */
  async show(data, round) {
    const started = performance.now();
    const n = data.labels.length;
    this.data = data;
    this.mode = drawingFor(n);
    this.el.dataset.drawing = this.mode;
    const density = this.mode === "density";
    const groups = splitByClass(data, density ? sampleIndices(n, HOVER_SAMPLE) : null);
    const shown = density ? Math.min(n, HOVER_SAMPLE) : n;
    const size = density ? 3 : shown > 20000 ? 2.5 : shown > 2000 ? 4 : 6;
    const traces = [...groups.entries()].map(([cls, g]) => ({
      type: "scattergl",
      mode: "markers",
      name: `class ${cls}`,
      x: g.x,
      y: g.y,
      customdata: g.index,
      marker: { size, color: classColour(cls), opacity: density ? 0.45 : shown > 20000 ? 0.6 : 0.8 },
      hovertemplate: `particle %{customdata}<br>class ${cls}<extra></extra>`,
    }));
    this.box = density ? dataBounds(data.x, data.y) : null;
    const view = data.view || "pca";
    const axis = view === "umap" ? "UMAP" : "PC";
    const layout = {
      margin: { l: 44, r: 8, t: 28, b: 36 },
      xaxis: { title: { text: `${axis} 1` }, zeroline: false },
      yaxis: { title: { text: `${axis} 2` }, zeroline: false },
      legend: { itemsizing: "constant", orientation: "h", x: 0, y: 1.01, yanchor: "bottom" },
      hovermode: "closest",
      dragmode: "pan",
      uirevision: `round-${round}-${view}`,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#fff",
      images: density ? [this.densityLayer(this.box, new Set())] : [],
    };
    if (density) {
      layout.xaxis.range = [this.box.x0, this.box.x1];
      layout.yaxis.range = [this.box.y0, this.box.y1];
    }
    await Plotly.react(this.el, traces, layout, CONFIG);
    // Plotly keeps the classes hidden in the legend while the round and view stay (uirevision).
    if (density && this.hiddenClasses().size) this.drawDensity();
    this.el.dataset.drawMs = String(Math.round(performance.now() - started)); // read by the benchmark
    this.el.dataset.round = String(round);
    this.el.dataset.view = view;
    if (!this.plotted) {
      this.plotted = true;
      this.listen();
    }
    this.count = n;
  }

  /** The density image of the window `box` as a Plotly layout image under the points. */
  densityLayer(box, hidden = this.hiddenClasses()) {
    const rect = this.el.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(64, Math.min(MAX_IMAGE_PIXELS, Math.round((rect.width || 600) * ratio)));
    const height = Math.max(64, Math.min(MAX_IMAGE_PIXELS, Math.round((rect.height || 360) * ratio)));
    const source = densityImage(this.data, box, { width, height, hidden, colourOf: classColour });
    return {
      source, xref: "x", yref: "y", x: box.x0, y: box.y1, sizex: box.x1 - box.x0, sizey: box.y1 - box.y0,
      xanchor: "left", yanchor: "top", sizing: "stretch", layer: "below",
    };
  }

  /** Classes switched off in the legend. */
  hiddenClasses() {
    const hidden = new Set();
    for (const trace of this.el.data || []) {
      if (trace.visible === "legendonly") hidden.add(Number(String(trace.name).replace("class ", "")));
    }
    return hidden;
  }

  /** Redraw the density for the window now shown (after a zoom, a pan or a class toggled). */
  drawDensity() {
    if (this.mode !== "density" || !this.el._fullLayout) return;
    const [x0, x1] = this.el._fullLayout.xaxis.range;
    const [y0, y1] = this.el._fullLayout.yaxis.range;
    Plotly.relayout(this.el, { images: [this.densityLayer({ x0, x1, y0, y1 })] });
  }

  listen() {
    this.el.on("plotly_hover", (event) => {
      const point = event.points && event.points[0];
      if (!point) return;
      const index = point.customdata;
      const cls = Number(String(point.data.name).replace("class ", ""));
      this.previewText.textContent = `particle ${index} · class ${cls}`;
      this.preview.style.borderColor = classColour(cls);
      this.preview.hidden = false;
      this.loadThumbnail(index);
    });
    this.el.on("plotly_unhover", () => {
      this.preview.hidden = true;
    });
    this.el.on("plotly_relayout", (change) => {
      // our own image update also lands here: only a change of the axes redraws
      if (Object.keys(change).some((key) => key.startsWith("xaxis") || key.startsWith("yaxis"))) this.redrawDensity();
    });
    this.el.on("plotly_restyle", () => this.redrawDensity());
  }

  destroy() {
    if (this.plotted) Plotly.purge(this.el);
  }
}
