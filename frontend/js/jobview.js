// One job, live: header with status and progress, the loss curve fed by Server-Sent Events,
// the embedding scatter and class gallery of a chosen round, and the downloads.

import { api, apiUrl } from "./api.js";
import { fmtDuration, fmtInt, fmtTime, h, progressBar, replace, statusBadge } from "./dom.js";
import { datasetOrigin } from "./datasets.js";
import { fetchEmbedding } from "./embedding.js";
import { ClassGallery } from "./gallery.js";
import { ACTIVE } from "./jobs.js";
import { ConvergencePlot } from "./convergence.js";
import { LossPlot } from "./lossplot.js";
import { drawingFor, EmbeddingScatter, HOVER_SAMPLE } from "./scatter.js";
import { StageTimings } from "./timings.js";

const EVENT_TYPES = ["status", "stage", "round_started", "loss", "epoch", "round", "end"];

export class JobView {
  constructor(root, jobId, { onGone }) {
    this.root = root;
    this.jobId = jobId;
    this.onGone = onGone;
    this.source = null;
    this.lastEventId = null;
    this.ended = false;
    this.closed = false;
    this.retryDelay = 500;
    this.rounds = [];
    this.round = null;
    this.follow = true; // jump to each new round while the newest one is shown
    this.view = "pca"; // the embedding view asked for; a round without it shows its PCA
    this.roundViews = new Map(); // round -> the views it has ("pca", "umap")
    this.live = { round: 0, pairsDone: 0, pairsTotal: 0, epoch: null, epochs: null, stage: null };
    this.loadSeq = 0;
  }

  async start() {
    replace(this.root, h("p", { class: "muted", text: `Loading job ${this.jobId}…` }));
    try {
      this.job = await api(`/api/jobs/${this.jobId}`);
    } catch (err) {
      replace(this.root, h("a", { href: "#/", class: "back", text: "← Datasets and jobs" }), h("p", { class: "error", text: `Job ${this.jobId}: ${err.message}` }));
      return;
    }
    try {
      this.dataset = await api(`/api/datasets/${this.job.dataset_id}`);
    } catch {
      this.dataset = { id: this.job.dataset_id, name: `dataset ${this.job.dataset_id}`, n_particles: 0 };
    }
    if (this.closed) return;
    this.build();
    this.renderHead();
    this.loss = new LossPlot(this.lossEl, this.dataset.n_particles);
    this.convergence = new ConvergencePlot(this.convergenceEl);
    this.timings = new StageTimings(this.timingsEl);
    try {
      this.loss.setRounds((await api(`/api/jobs/${this.jobId}/loss`)).rounds);
    } catch {
      // the live stream replays the points as well
    }
    if (this.closed) return;
    this.scatter = new EmbeddingScatter(this.scatterEl, this.previewEl, {
      thumbnailUrl: (i) => apiUrl(`/api/datasets/${this.job.dataset_id}/particles/${i}.png`, { size: 96 }),
    });
    this.gallery = new ClassGallery(this.galleryEl, { jobId: this.jobId, datasetId: this.job.dataset_id });
    await this.refreshRounds();
    this.connect();
  }

  build() {
    this.headEl = h("div", { class: "job-head panel" });
    this.lossEl = h("div", { class: "plot", id: "loss-plot" });
    this.convergenceEl = h("div", { class: "plot", id: "convergence-plot" });
    this.timingsEl = h("div", { id: "stage-timings" });
    this.scatterEl = h("div", { class: "plot", id: "scatter-plot" });
    this.previewEl = h(
      "div",
      { class: "hover-preview", id: "hover-preview", hidden: true },
      h("img", { alt: "hovered particle", width: "96", height: "96" }),
      h("span", { class: "preview-caption" }),
    );
    this.slider = h("input", { type: "range", id: "round-slider", min: "1", max: "1", step: "1", value: "1", "aria-label": "round", disabled: true });
    this.slider.addEventListener("input", () => {
      const r = this.rounds[Number(this.slider.value) - 1];
      this.follow = r === this.rounds[this.rounds.length - 1];
      this.selectRound(r);
    });
    this.sliderLabel = h("span", { class: "muted", id: "round-label" });
    // PCA | UMAP: UMAP is enabled for a round that has one (the last round of a job with umap on).
    this.viewButtons = {
      pca: h("button", { type: "button", class: "small", id: "view-pca", text: "PCA", "aria-pressed": "true", on: { click: () => this.chooseView("pca") } }),
      umap: h("button", { type: "button", class: "small", id: "view-umap", text: "UMAP", "aria-pressed": "false", disabled: true, title: "UMAP is computed for the last round of a job run with umap on", on: { click: () => this.chooseView("umap") } }),
    };
    this.scatterNote = h("p", { class: "muted", id: "scatter-note" });
    this.galleryEl = h("div", { id: "gallery" });
    this.galleryTitle = h("h3", { text: "Class averages" });
    this.downloadsEl = h("div", { class: "downloads", id: "downloads" });
    replace(
      this.root,
      h("a", { href: "#/", class: "back", text: "← Datasets and jobs" }),
      this.headEl,
      h(
        "div",
        { class: "plots" },
        h(
          "section",
          { class: "panel" },
          h("h3", { text: "Training loss" }),
          this.lossEl,
          h("h3", { text: "Convergence: churn and class sizes per round" }),
          this.convergenceEl,
          h("h3", { text: "Seconds per stage" }),
          this.timingsEl,
        ),
        h(
          "section",
          { class: "panel" },
          h(
            "div",
            { class: "row spread wrap" },
            h("h3", { text: "Embedding" }),
            h("span", { class: "row view-toggle", role: "group", "aria-label": "embedding view" }, this.viewButtons.pca, this.viewButtons.umap),
            h("span", { class: "row round-control" }, h("label", { for: "round-slider", text: "Round" }), this.slider, this.sliderLabel),
          ),
          this.scatterNote,
          h("div", { class: "scatter-wrap" }, this.scatterEl, this.previewEl),
        ),
      ),
      h("section", { class: "panel", id: "gallery-panel" }, this.galleryTitle, this.galleryEl),
      h("section", { class: "panel" }, h("h3", { text: "Downloads" }), this.downloadsEl),
    );
  }

  /** Overall progress: the server's figure, or a finer one from the live loss events. */
  progress() {
    const job = this.job;
    let fraction = Number(job.progress) || 0;
    const total = job.round_num || (job.params && job.params.round_num) || 1;
    if (job.status === "running" && this.live.round && this.live.pairsTotal) {
      const local = (this.live.round - 1 + Math.min(1, this.live.pairsDone / this.live.pairsTotal)) / total;
      fraction = Math.max(fraction, local);
    }
    if (job.status === "succeeded") fraction = 1;
    return fraction;
  }

  renderHead() {
    const job = this.job;
    // What the worker really ran with (auto options decided), else what was asked for.
    const p = job.effective_params || job.params || {};
    const option = (value, on, off) => (value === null || value === undefined ? `${on}: auto` : value ? on : off);
    const total = job.round_num ?? p.round_num ?? "?";
    const round = Math.max(job.round || 0, this.live.round || 0);
    const times = [];
    if (job.started_at) times.push(`started ${fmtTime(job.started_at)}`);
    if (job.finished_at) {
      times.push(`finished ${fmtTime(job.finished_at)}`);
      const secs = (new Date(job.finished_at) - new Date(job.started_at)) / 1000;
      if (job.started_at && Number.isFinite(secs)) times.push(`took ${fmtDuration(secs)}`);
    }
    // The device the worker really used; before a worker has it, what was asked for.
    const device = (job.effective_params && job.effective_params.device) || job.device;
    const where = [job.worker, device].filter(Boolean).join(" · ");
    const params = [
      p.method, `${p.cluster_num} classes`, `lr ${p.learning_rate}`, `${p.epoch_num} epochs`, `batch ${p.batch_size}`,
      `${p.round_num} rounds`, `size ${p.size}`, `seed ${p.seed}`, device ? `device ${device}` : `device ${p.device ?? "auto"}`,
      option(p.phase_flip, "phase flip", "no phase flip"), option(p.align_averages, "aligned averages", "plain averages"),
    ];
    const actions = h("span", { class: "row" });
    if (ACTIVE.has(job.status)) actions.append(h("button", { type: "button", id: "job-cancel", text: "Cancel job", on: { click: () => this.cancel() } }));
    else actions.append(h("button", { type: "button", id: "job-delete", class: "danger", text: "Delete job", on: { click: () => this.remove() } }));
    this.liveEl = this.liveEl || h("span", { class: "live", id: "live-state" });
    replace(
      this.headEl,
      h(
        "div",
        { class: "row spread wrap" },
        h("h2", { class: "row" }, h("span", { text: `Job #${job.id}` }), h("span", { class: "dataset-name", text: this.dataset.name }), statusBadge(job.status), this.liveEl),
        actions,
      ),
      h(
        "div",
        { class: "row wrap" },
        (this.roundEl = h("span", { id: "job-round", text: this.roundText() })),
        (this.progressEl = h("span", {}, progressBar(this.progress(), "job progress"))),
        h("span", { class: "muted", text: `${fmtInt(this.dataset.n_particles)} particles · box ${this.dataset.box_size ?? "?"} px` }),
        where ? h("span", { class: "muted", text: where }) : null,
      ),
      h("p", { class: "muted params", text: params.join(" · ") }),
      this.originLine(),
      times.length ? h("p", { class: "muted", text: times.join(" · ") }) : null,
      this.stopped ? h("p", { class: "muted", id: "job-stopped", text: this.stopped }) : null,
      job.error ? h("p", { class: "error", id: "job-error", text: job.error }) : null,
    );
  }

  /** For a derived dataset: its parent, and the job, round and classes that chose it. */
  originLine() {
    const d = this.dataset;
    if (!d.parent_id) return null;
    const line = h("p", { class: "muted", id: "job-origin" }, h("span", { text: `Dataset: ${datasetOrigin(d)}` }));
    if (d.source_job_id) line.append(" · ", h("a", { href: `#/jobs/${encodeURIComponent(d.source_job_id)}`, text: `open job #${d.source_job_id}` }));
    return line;
  }

  setLive(state, text) {
    if (!this.liveEl) return;
    this.liveEl.className = `live ${state}`;
    this.liveEl.textContent = text;
  }

  /** Open the event stream, from the last event seen when reconnecting. */
  connect() {
    if (this.closed || this.ended) return;
    const params = this.lastEventId !== null ? { last_event_id: this.lastEventId } : {};
    const source = new EventSource(apiUrl(`/api/jobs/${this.jobId}/events`, params));
    this.source = source;
    this.setLive("connecting", "connecting…");
    source.addEventListener("open", () => {
      this.retryDelay = 500;
      this.setLive("on", "live");
    });
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => {
        if (event.lastEventId) this.lastEventId = event.lastEventId;
        let data = {};
        try {
          data = event.data ? JSON.parse(event.data) : {};
        } catch {
          return;
        }
        this.onEvent(type, data);
      });
    }
    source.addEventListener("error", () => {
      if (this.closed || this.ended) return;
      // The stream broke (network blip, proxy timeout, server restart) or was refused (401,
      // 502). Reconnect ourselves with ?last_event_id= rather than leave it to the browser:
      // the resume point is then explicit, and a refused stream is retried as well.
      source.close();
      this.setLive("off", "reconnecting…");
      const delay = this.retryDelay;
      this.retryDelay = Math.min(10000, this.retryDelay * 2);
      setTimeout(async () => {
        if (this.closed) return;
        try {
          this.job = await api(`/api/jobs/${this.jobId}`); // asks for the token on a 401
          this.renderHead();
        } catch (err) {
          if (err.status === 404) return this.gone();
        }
        this.connect();
      }, delay);
    });
  }

  onEvent(type, data) {
    if (type === "loss") {
      this.loss.add(data);
      this.live.round = Number(data.round);
      this.live.pairsDone = Number(data.pairs_done);
      this.live.epoch = Number(data.epoch);
      if (this.job.status === "queued") {
        this.job.status = "running";
        this.renderHead();
      }
      this.renderProgressSoon();
    } else if (type === "stage") {
      this.live.stage = data;
      this.renderProgressSoon();
    } else if (type === "round_started") {
      const epochs = Number(data.epochs) || null; // absent from jobs run before it was sent
      this.live = { round: Number(data.round), pairsDone: 0, pairsTotal: Number(data.pairs_total), epoch: 1, epochs, stage: null };
      this.job.round = Math.max(this.job.round || 0, Number(data.round));
      if (data.round_num) this.job.round_num = data.round_num;
      this.renderHead();
      if (Number(data.round) > 1) this.refreshRounds(); // the previous round's files are in place
    } else if (type === "epoch") {
      this.live.epoch = Number(data.epoch);
    } else if (type === "round") {
      this.job.round = Math.max(this.job.round || 0, Number(data.round));
      this.convergence.add(data);
      this.timings.add(data);
      this.refreshJob();
      this.refreshRounds();
      this.reloadLoss(Number(data.round));
    } else if (type === "status") {
      this.job.status = data.status || this.job.status;
      if (data.error) this.job.error = data.error;
      if (typeof data.message === "string" && data.message.startsWith("stopped:")) this.stopped = data.message;
      this.renderHead();
      if (!ACTIVE.has(this.job.status)) this.refreshJob();
    } else if (type === "end") {
      this.ended = true;
      this.source.close();
      this.setLive("done", "finished");
      this.refreshJob();
      this.refreshRounds().then(() => this.reloadClasses());
      this.reloadLoss(Infinity);
    }
  }

  /** Every loss point of the rounds up to `complete` (the stream carries only some of them). */
  async reloadLoss(complete) {
    try {
      const history = await api(`/api/jobs/${this.jobId}/loss`);
      if (!this.closed) this.loss.setRounds(history.rounds.filter((r) => r.round <= complete));
    } catch {
      // keep the live points
    }
  }

  /** "round r/R", then while running the round's epoch (when it trains more than one) or the
   * stage in progress outside training (preprocess, initial labels, UMAP) with its share done. */
  roundText() {
    const p = this.job.params || {};
    const total = this.job.round_num ?? p.round_num ?? "?";
    const round = Math.max(this.job.round || 0, this.live.round || 0);
    // A timer set by the last event may fire after the job has ended: no detail then.
    if (this.job.status !== "running") return `round ${round}/${total}`;
    const stage = this.live.stage;
    if (stage && Number(stage.done) < Number(stage.total)) {
      const share = Math.floor((100 * Number(stage.done)) / Math.max(1, Number(stage.total)));
      return `round ${round}/${total} · ${stage.stage} ${share}%`;
    }
    const epochs = this.live.epochs ?? p.epoch_num;
    const epoch = this.live.epoch && epochs > 1 ? ` · epoch ${this.live.epoch}/${epochs}` : "";
    return `round ${round}/${total}${epoch}`;
  }

  /** Update the round and progress in place (many loss events a second; buttons stay put). */
  renderProgressSoon() {
    if (this.headTimer) return;
    this.headTimer = setTimeout(() => {
      this.headTimer = null;
      if (this.closed || !this.roundEl) return;
      this.roundEl.textContent = this.roundText();
      replace(this.progressEl, progressBar(this.progress(), "job progress"));
    }, 250);
  }

  async refreshJob() {
    try {
      this.job = await api(`/api/jobs/${this.jobId}`);
    } catch (err) {
      if (err.status === 404) this.gone();
      return;
    }
    if (!this.closed) this.renderHead();
  }

  async refreshRounds() {
    let rounds;
    try {
      rounds = await api(`/api/jobs/${this.jobId}/rounds`);
    } catch {
      return;
    }
    if (this.closed) return;
    rounds = rounds.map(Number).sort((a, b) => a - b);
    const grew = rounds.length !== this.rounds.length;
    this.rounds = rounds;
    if (!rounds.length) {
      this.slider.disabled = true;
      this.sliderLabel.textContent = "";
      this.scatterNote.textContent = "The embedding and the class averages appear when the first round is complete.";
      this.galleryTitle.textContent = "Class averages";
      this.renderDownloads();
      return;
    }
    this.slider.disabled = rounds.length < 2;
    this.slider.max = String(rounds.length);
    if (this.round === null || (grew && this.follow)) this.selectRound(rounds[rounds.length - 1]);
    else this.renderDownloads();
  }

  /** Show round r in the slider, the scatter, the gallery and the downloads. */
  async selectRound(r) {
    const seq = ++this.loadSeq;
    this.round = r;
    this.slider.value = String(this.rounds.indexOf(r) + 1);
    const total = this.job.round_num ?? "?";
    this.sliderLabel.textContent = r === 0 ? "initial classes" : `${r} of ${total}`;
    this.galleryTitle.textContent = r === 0 ? "Class averages, initial classes (round 0)" : `Class averages, round ${r}`;
    this.renderDownloads();
    let embedding;
    let classes;
    try {
      [embedding, classes] = await Promise.all([
        this.loadEmbedding(r),
        api(`/api/jobs/${this.jobId}/rounds/${r}/classes`),
      ]);
    } catch (err) {
      this.scatterNote.textContent = `Round ${r} could not be loaded: ${err.message}`;
      return;
    }
    if (seq !== this.loadSeq || this.closed) return;
    this.classCount = classes.length;
    this.showClasses(r, classes);
    await this.showEmbedding(embedding, r);
  }

  /** Round r's embedding in the view asked for, or its PCA when the round has no such view. A
   * round's views never change once it is complete; the PCA's answer says which it has. */
  async loadEmbedding(r) {
    let pca = null;
    if (this.view !== "pca" && !this.roundViews.has(r)) {
      pca = await fetchEmbedding(this.jobId, r, "pca");
      this.roundViews.set(r, pca.views);
    }
    if (this.view !== "pca" && this.roundViews.get(r).includes(this.view)) return fetchEmbedding(this.jobId, r, this.view);
    return pca || fetchEmbedding(this.jobId, r, "pca");
  }

  async showEmbedding(embedding, r) {
    this.roundViews.set(r, embedding.views);
    for (const [view, button] of Object.entries(this.viewButtons)) {
      button.disabled = !embedding.views.includes(view);
      button.setAttribute("aria-pressed", String(view === embedding.view));
    }
    const n = embedding.labels.length;
    const hover = drawingFor(n) === "density"
      ? `drawn as a density; hover one of ${fmtInt(Math.min(n, HOVER_SAMPLE))} sampled points to see the particle`
      : "hover a point to see the particle";
    const layout = embedding.view === "umap" ? "UMAP layout" : "PCA";
    this.scatterNote.textContent = `${fmtInt(n)} particles, ${this.classCount} classes, ${layout}; ${hover}.`;
    await this.scatter.show(embedding, r);
  }

  /** Switch the shown round's scatter to another view (the gallery stays). */
  async chooseView(view) {
    if (view === this.view || this.round === null) return;
    this.view = view;
    const seq = ++this.loadSeq;
    const r = this.round;
    let embedding;
    try {
      embedding = await this.loadEmbedding(r);
    } catch (err) {
      this.scatterNote.textContent = `Round ${r} could not be loaded: ${err.message}`;
      return;
    }
    if (seq !== this.loadSeq || this.closed) return;
    await this.showEmbedding(embedding, r);
  }

  showClasses(r, classes) {
    this.fullSize = classes.some((c) => c.full_size) ? r : null;
    this.galleryTitle.textContent = `Class averages, round ${r}${this.fullSize === r ? " · full size" : ""}`;
    this.gallery.show(r, classes);
    this.renderDownloads();
  }

  /** The shown round's classes again: its full-size averages appear once the job is done. */
  async reloadClasses() {
    const r = this.round;
    const seq = this.loadSeq;
    if (r === null) return;
    try {
      const classes = await api(`/api/jobs/${this.jobId}/rounds/${r}/classes`);
      if (seq === this.loadSeq && !this.closed) this.showClasses(r, classes);
    } catch {
      // keep what is shown
    }
  }

  renderDownloads() {
    const links = [];
    const link = (path, text, note, params) =>
      h("a", { href: apiUrl(path, params), download: "", class: "download", text }, note ? h("span", { class: "muted", text: ` ${note}` }) : null);
    if (this.round !== null) {
      const base = `/api/jobs/${this.jobId}/rounds/${this.round}`;
      // class_averages.mrcs is at the input's box and pixel size once the round has them (the
      // last round of a finished job); the classes of the shown round say whether it does.
      const full = this.fullSize === this.round;
      links.push(link(`${base}/class_averages.mrcs`, "Class averages (.mrcs)", `round ${this.round}, ${full ? "full size" : "model size"}`));
      if (full) links.push(link(`${base}/class_averages.mrcs`, "Class averages at the model size (.mrcs)", `round ${this.round}`, { model_size: true }));
      links.push(
        link(`${base}/class_averages.png`, "Class averages (PNG)", `round ${this.round}`),
        link(`${base}/labels.csv`, "Labels (CSV)", `round ${this.round}`),
        link(`${base}/archive.zip`, "Everything of the round (.zip)", `round ${this.round}`),
      );
    }
    if (this.job.status === "succeeded") {
      links.push(
        link(`/api/jobs/${this.jobId}/particles.star`, "Particles with classes (RELION .star)", "final round"),
        link(`/api/jobs/${this.jobId}/particles.cs`, "Particles with classes (cryoSPARC .cs)", "final round"),
      );
    }
    if (!links.length) links.push(h("span", { class: "muted", text: "Downloads appear when the first round is complete." }));
    replace(this.downloadsEl, links);
  }

  async cancel() {
    try {
      await api(`/api/jobs/${this.jobId}/cancel`, { method: "POST" });
    } catch (err) {
      window.alert(`The job could not be cancelled: ${err.message}`);
    }
    this.refreshJob();
  }

  async remove() {
    if (!window.confirm(`Delete job ${this.jobId} and its results?`)) return;
    try {
      await api(`/api/jobs/${this.jobId}`, { method: "DELETE" });
    } catch (err) {
      window.alert(`The job could not be deleted: ${err.message}`);
      return;
    }
    this.gone();
  }

  gone() {
    this.destroy();
    this.onGone?.();
  }

  destroy() {
    this.closed = true;
    if (this.source) this.source.close();
    clearTimeout(this.headTimer);
    this.loss?.destroy();
    this.convergence?.destroy();
    this.scatter?.destroy();
  }
}
