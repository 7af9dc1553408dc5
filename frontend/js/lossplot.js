// The loss curve: one trace per round, x in epochs (pairs done / N), growing point by point.
// Points arriving between two frames are batched into one Plotly.extendTraces call.

const LAYOUT = {
  margin: { l: 56, r: 12, t: 8, b: 44 },
  xaxis: { title: { text: "epoch" }, rangemode: "tozero", zeroline: false },
  yaxis: { title: { text: "contrastive loss" }, zeroline: false },
  legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 0 },
  hovermode: "closest",
  uirevision: "loss",
  paper_bgcolor: "rgba(0,0,0,0)",
  plot_bgcolor: "#fff",
};
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const ROUND_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#eeca3b"];

export class LossPlot {
  /** n: particles in the dataset (one epoch = n pairs). */
  constructor(el, n) {
    this.el = el;
    this.n = Math.max(1, n || 1);
    this.traceOfRound = new Map(); // round -> trace index
    this.lastStep = new Map(); // round -> last step drawn (replayed events are skipped)
    this.queue = new Map(); // round -> {x: [], y: [], text: []}
    this.frame = null;
    // Plotly calls run one after another: a trace must exist before points extend it.
    this.chain = Plotly.newPlot(el, [], LAYOUT, CONFIG);
  }

  trace(round) {
    const colour = ROUND_COLOURS[(round - 1) % ROUND_COLOURS.length];
    return {
      type: "scatter",
      mode: "lines+markers",
      name: `round ${round}`,
      x: [],
      y: [],
      text: [],
      marker: { size: 4, color: colour },
      line: { width: 1.5, color: colour },
      hovertemplate: "round " + round + "<br>epoch %{x:.2f}<br>loss %{y:.4f}<br>%{text}<extra></extra>",
    };
  }

  /** Add one loss point {round, epoch, step, pairs_done, loss}; duplicates are ignored. */
  add(point) {
    const round = Number(point.round);
    const step = Number(point.step);
    if (!(step > (this.lastStep.get(round) ?? -Infinity))) return false;
    this.lastStep.set(round, step);
    if (!this.queue.has(round)) this.queue.set(round, { x: [], y: [], text: [] });
    const q = this.queue.get(round);
    q.x.push(Number(point.pairs_done) / this.n);
    q.y.push(Number(point.loss));
    q.text.push(`step ${step}`);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
    return true;
  }

  flush() {
    this.frame = null;
    this.chain = this.chain.then(() => this.draw());
  }

  async draw() {
    if (this.destroyed) return;
    const pending = this.queue;
    this.queue = new Map();
    const rounds = [...pending.keys()].sort((a, b) => a - b);
    for (const round of rounds) {
      if (!this.traceOfRound.has(round)) {
        this.traceOfRound.set(round, this.traceOfRound.size);
        await Plotly.addTraces(this.el, this.trace(round));
      }
    }
    if (!rounds.length) return;
    const update = { x: [], y: [], text: [] };
    const indices = [];
    for (const round of rounds) {
      const q = pending.get(round);
      indices.push(this.traceOfRound.get(round));
      update.x.push(q.x);
      update.y.push(q.y);
      update.text.push(q.text);
    }
    await Plotly.extendTraces(this.el, update, indices);
  }

  /**
   * Draw rounds from GET /api/jobs/{id}/loss in full, replacing what the live stream drew: the
   * worker sends at most a few loss events a second, the round's loss.json has every point.
   * Only pass rounds that are complete (or when nothing was drawn yet), or newer live points
   * would be lost.
   */
  setRounds(rounds) {
    for (const r of rounds) this.replaceRound(Number(r.round), r.points || []);
  }

  replaceRound(round, points) {
    const x = points.map((p) => Number(p.pairs_done) / this.n);
    const y = points.map((p) => Number(p.loss));
    const text = points.map((p) => `step ${p.step}`);
    const last = points.reduce((m, p) => Math.max(m, Number(p.step)), -Infinity);
    this.queue.delete(round);
    this.lastStep.set(round, Math.max(this.lastStep.get(round) ?? -Infinity, last));
    this.chain = this.chain.then(async () => {
      if (this.destroyed) return;
      if (!this.traceOfRound.has(round)) {
        this.traceOfRound.set(round, this.traceOfRound.size);
        await Plotly.addTraces(this.el, { ...this.trace(round), x, y, text });
      } else {
        await Plotly.restyle(this.el, { x: [x], y: [y], text: [text] }, [this.traceOfRound.get(round)]);
      }
    });
  }

  destroy() {
    this.destroyed = true;
    if (this.frame) cancelAnimationFrame(this.frame);
    Plotly.purge(this.el);
  }
}
