// Seconds per stage and round, from the "round" events' timings (round.json): preprocessing and
// initial labels (in the first round a run writes), then each round's training or pose search
// with embedding, KMeans, the last round's likelihood step (pose) and averages. The event
// stream replays every round, so a finished job shows them all and a running one grows.

import { fmtDuration, h, replace } from "./dom.js";

const STAGES = [
  ["preprocess", "preprocess"],
  ["initial_labels", "initial labels"],
  ["train_embed", "train + embed"],
  ["kmeans", "KMeans"],
  ["refine", "likelihood step"],
  ["averages", "averages"],
  ["umap", "UMAP view"],
];

function seconds(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  return value < 10 ? `${value.toFixed(1)} s` : fmtDuration(value);
}

export class StageTimings {
  constructor(el) {
    this.el = el;
    this.rounds = new Map(); // round -> {stage: seconds}
    this.render();
  }

  /** One round event {round, timings}; a replayed round replaces itself. */
  add(data) {
    const round = Number(data.round);
    if (!Number.isFinite(round) || !data.timings || typeof data.timings !== "object") return;
    this.rounds.set(round, data.timings);
    this.render();
  }

  render() {
    const rounds = [...this.rounds.keys()].sort((a, b) => a - b);
    if (!rounds.length) {
      replace(this.el, h("p", { class: "muted", text: "Seconds per stage appear as rounds complete." }));
      return;
    }
    // Only the stages some round has (a method without KMeans or training shows none of them).
    const stages = STAGES.filter(([key]) => rounds.some((r) => key in this.rounds.get(r)));
    const head = h("tr", {}, h("th", { text: "round" }), ...stages.map(([, label]) => h("th", { text: label })), h("th", { text: "total" }));
    const rows = rounds.map((r) => {
      const t = this.rounds.get(r);
      const total = Object.values(t).filter((v) => typeof v === "number").reduce((a, b) => a + b, 0);
      return h("tr", {}, h("td", { text: String(r) }), ...stages.map(([key]) => h("td", { text: seconds(t[key]) })), h("td", { text: seconds(total) }));
    });
    replace(this.el, h("div", { class: "table-scroll" }, h("table", { class: "timings-table" }, h("thead", {}, head), h("tbody", {}, ...rows))));
  }
}
