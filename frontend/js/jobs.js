// The jobs table: status, round r/R, progress, and cancel / delete / open.

import { api } from "./api.js";
import { fmtTime, h, progressBar, replace, statusBadge } from "./dom.js";

export const ACTIVE = new Set(["queued", "running"]);

export class JobsPanel {
  constructor({ onOpen }) {
    this.onOpen = onOpen;
    this.el = document.getElementById("jobs-list");
    this.jobs = [];
    this.datasetNames = new Map();
  }

  setDatasets(datasets) {
    this.datasetNames = new Map(datasets.map((d) => [d.id, d.name]));
    this.render();
  }

  async refresh() {
    try {
      this.jobs = await api("/api/jobs");
    } catch (err) {
      replace(this.el, h("p", { class: "error", text: `Jobs could not be loaded: ${err.message}` }));
      return;
    }
    this.render();
  }

  render() {
    if (!this.jobs.length) {
      replace(this.el, h("p", { class: "muted", text: "No jobs yet." }));
      return;
    }
    const jobs = [...this.jobs].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)) || String(b.id).localeCompare(String(a.id)));
    const table = h(
      "table",
      { class: "jobs-table" },
      h(
        "thead",
        {},
        h("tr", {}, ["Job", "Dataset", "Method", "Status", "Round", "Progress", "Created", ""].map((t) => h("th", { text: t, class: `col-${t.toLowerCase() || "actions"}` }))),
      ),
      h("tbody", {}, jobs.map((job) => this.row(job))),
    );
    replace(this.el, h("div", { class: "table-scroll" }, table));
  }

  row(job) {
    const params = job.params || {};
    const name = this.datasetNames.get(job.dataset_id) ?? `dataset ${job.dataset_id}`;
    const open = h("a", { href: `#/jobs/${job.id}`, text: `#${job.id}` });
    const actions = h("td", { class: "actions" });
    actions.append(h("button", { type: "button", class: "small", text: "Open", on: { click: () => this.onOpen(job.id) } }));
    // The server deletes finished jobs only: a queued or running one is cancelled first.
    if (ACTIVE.has(job.status)) {
      actions.append(h("button", { type: "button", class: "small", text: "Cancel", on: { click: () => this.cancel(job) } }));
    } else {
      actions.append(h("button", { type: "button", class: "small danger", text: "Delete", on: { click: () => this.remove(job) } }));
    }
    const status = h("td", {}, statusBadge(job.status));
    if (job.error) status.append(h("div", { class: "error small-text", text: job.error }));
    return h(
      "tr",
      { dataset: { jobId: String(job.id) }, class: `job-row status-${job.status}` },
      h("td", {}, open),
      h("td", { class: "ellipsis", text: name, title: name }),
      h("td", { class: "col-method", text: params.method || "" }),
      status,
      h("td", { text: `${job.round || 0}/${job.round_num || params.round_num || "?"}` }),
      h("td", {}, progressBar(job.progress, `job ${job.id} progress`)),
      h("td", { class: "muted col-created", text: fmtTime(job.created_at) }),
      actions,
    );
  }

  async cancel(job) {
    try {
      await api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    } catch (err) {
      window.alert(`Job ${job.id} could not be cancelled: ${err.message}`);
    }
    await this.refresh();
  }

  async remove(job) {
    if (!window.confirm(`Delete job ${job.id} and its results?`)) return;
    try {
      await api(`/api/jobs/${job.id}`, { method: "DELETE" });
    } catch (err) {
      window.alert(`Job ${job.id} could not be deleted: ${err.message}`);
    }
    await this.refresh();
  }

  hasActive() {
    return this.jobs.some((job) => ACTIVE.has(job.status));
  }
}
