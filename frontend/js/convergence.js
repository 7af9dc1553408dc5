// Convergence per round, from the "round" events: the share of particles that changed class
// (label churn, line, left axis) and the class sizes (stacked bars, right axis). The event
// stream replays every round of a job, so a finished job draws in full and a running one grows.

const LAYOUT = {
  margin: { l: 56, r: 56, t: 8, b: 44 },
  xaxis: { title: { text: "round" }, dtick: 1, zeroline: false },
  yaxis: { title: { text: "churn" }, tickformat: ".0%", rangemode: "tozero", zeroline: false },
  yaxis2: { title: { text: "particles per class" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
  barmode: "stack",
  legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 0 },
  hovermode: "closest",
  uirevision: "convergence",
  paper_bgcolor: "rgba(0,0,0,0)",
  plot_bgcolor: "#fff",
};
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

export class ConvergencePlot {
  constructor(el) {
    this.el = el;
    this.rounds = new Map(); // round -> {counts, churn, mean_log_likelihood}
    this.chain = Plotly.newPlot(el, [], LAYOUT, CONFIG);
  }

  /** One round's figures {round, counts, churn, mean_log_likelihood?}; a replayed round replaces itself. */
  add(data) {
    const round = Number(data.round);
    if (!Number.isFinite(round) || !Array.isArray(data.counts)) return;
    this.rounds.set(round, { counts: data.counts.map(Number), churn: data.churn, score: data.mean_log_likelihood });
    this.draw();
  }

  traces() {
    const rounds = [...this.rounds.keys()].sort((a, b) => a - b);
    const k = Math.max(0, ...rounds.map((r) => this.rounds.get(r).counts.length));
    const bars = [];
    for (let c = 0; c < k; c++) {
      bars.push({
        type: "bar",
        name: `class ${c + 1}`,
        x: rounds,
        y: rounds.map((r) => this.rounds.get(r).counts[c] ?? 0),
        yaxis: "y2",
        opacity: 0.35,
        showlegend: false,
        hovertemplate: `class ${c + 1}: %{y} particles<extra>round %{x}</extra>`,
      });
    }
    const withChurn = rounds.filter((r) => typeof this.rounds.get(r).churn === "number");
    const churn = {
      type: "scatter",
      mode: "lines+markers",
      name: "churn",
      x: withChurn,
      y: withChurn.map((r) => this.rounds.get(r).churn),
      text: withChurn.map((r) => {
        const score = this.rounds.get(r).score;
        return typeof score === "number" ? `mean log-likelihood ${score.toPrecision(5)}` : "";
      }),
      line: { color: "#e45756", width: 2 },
      hovertemplate: "round %{x}<br>churn %{y:.2%}<br>%{text}<extra></extra>",
    };
    return [...bars, churn];
  }

  draw() {
    this.chain = this.chain.then(() => {
      if (this.destroyed) return;
      return Plotly.react(this.el, this.traces(), LAYOUT, CONFIG);
    });
  }

  destroy() {
    this.destroyed = true;
    Plotly.purge(this.el);
  }
}
