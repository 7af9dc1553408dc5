// The 2-D embedding scatter (WebGL, fine with 50,000 particles): one trace per class so the
// legend toggles classes; hovering a point shows that particle's thumbnail beside the plot.

import { classColour, throttle } from "./dom.js";

const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

/** Split the particles into one trace per class: {cls: {x, y, index}}. */
export function splitByClass(data) {
  const n = data.labels.length;
  const counts = new Map();
  for (let i = 0; i < n; i++) counts.set(data.labels[i], (counts.get(data.labels[i]) || 0) + 1);
  const groups = new Map();
  for (const [cls, count] of counts) {
    groups.set(cls, { x: new Float32Array(count), y: new Float32Array(count), index: new Array(count), fill: 0 });
  }
  for (let i = 0; i < n; i++) {
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
  }

  /** Draw round `round` from GET .../rounds/{r}/embedding ({x, y, labels}). */
  async show(data, round) {
    const groups = splitByClass(data);
    const n = data.labels.length;
    const size = n > 20000 ? 2.5 : n > 2000 ? 4 : 6;
    const traces = [...groups.entries()].map(([cls, g]) => ({
      type: "scattergl",
      mode: "markers",
      name: `class ${cls}`,
      x: g.x,
      y: g.y,
      customdata: g.index,
      marker: { size, color: classColour(cls), opacity: n > 20000 ? 0.6 : 0.8 },
      hovertemplate: `particle %{customdata}<br>class ${cls}<extra></extra>`,
    }));
    const layout = {
      margin: { l: 44, r: 8, t: 28, b: 36 },
      xaxis: { title: { text: "PC 1" }, zeroline: false },
      yaxis: { title: { text: "PC 2" }, zeroline: false },
      legend: { itemsizing: "constant", orientation: "h", x: 0, y: 1.01, yanchor: "bottom" },
      hovermode: "closest",
      dragmode: "pan",
      uirevision: `round-${round}`,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#fff",
    };
    await Plotly.react(this.el, traces, layout, CONFIG);
    this.el.dataset.round = String(round);
    if (!this.plotted) {
      this.plotted = true;
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
    }
    this.count = n;
  }

  destroy() {
    if (this.plotted) Plotly.purge(this.el);
  }
}
