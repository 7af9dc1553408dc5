// Class averages of one round: sorted by size (or quality), counts and percentages, the class of
// boxes that look empty marked as such; tick classes to export them as a subset or to classify
// them again ("New job from these classes"), click one to page through its member particles.

import { api, saveResponse, apiUrl } from "./api.js";
import { classColour, fmtInt, fmtPercent, h, replace } from "./dom.js";

const MEMBERS_PAGE = 60;

export class ClassGallery {
  constructor(root, { jobId, datasetId }) {
    this.jobId = jobId;
    this.datasetId = datasetId;
    this.round = null;
    this.classes = [];
    this.selected = new Set();
    this.sortBy = "size";
    this.membersOf = null;
    this.membersOffset = 0;

    this.sortSelect = h(
      "select",
      { id: "gallery-sort", "aria-label": "sort classes", on: { change: () => { this.sortBy = this.sortSelect.value; this.render(); } } },
      h("option", { value: "size", text: "by size" }),
      h("option", { value: "quality", text: "by quality (FRC)" }),
      h("option", { value: "class", text: "by class number" }),
    );
    this.formatSelect = h(
      "select",
      { id: "subset-format", "aria-label": "subset format" },
      h("option", { value: "star", text: ".star (RELION)" }),
      h("option", { value: "mrcs", text: ".mrcs (images)" }),
      h("option", { value: "cs", text: ".cs (cryoSPARC)" }),
    );
    this.reclassifyButton = h("button", { type: "button", id: "subset-reclassify", text: "New job from these classes", on: { click: () => this.reclassify() } });
    this.exportButton = h("button", { type: "button", id: "subset-export", class: "primary", text: "Export subset", on: { click: () => this.exportSubset() } });
    this.exportNote = h("span", { class: "muted", id: "subset-note", "aria-live": "polite" });
    this.grid = h("div", { class: "gallery-grid", id: "gallery-grid" });
    this.members = h("div", { class: "members", id: "members", hidden: true });
    replace(
      root,
      h(
        "div",
        { class: "row spread wrap gallery-tools" },
        h("span", { class: "row" }, h("label", { for: "gallery-sort", text: "Sort" }), this.sortSelect,
          h("button", { type: "button", class: "small", text: "Tick all", on: { click: () => this.tickAll(true) } }),
          h("button", { type: "button", class: "small", text: "Untick all", on: { click: () => this.tickAll(false) } })),
        h("span", { class: "row" }, this.reclassifyButton, this.formatSelect, this.exportButton),
      ),
      this.exportNote,
      this.grid,
      this.members,
    );
    this.updateExport();
  }

  /** Show round r's classes ([{class, count, fraction, quality?}]). */
  show(round, classes) {
    const sameRound = this.round === round;
    this.round = round;
    this.classes = classes;
    if (!sameRound) {
      this.selected.clear();
      this.closeMembers();
    }
    const hasQuality = classes.some((c) => Number.isFinite(c.quality) || Number.isFinite(c.quality_nyquist));
    this.grid.dataset.round = String(round); // which round the cards show (the slider may be ahead)
    this.sortSelect.querySelector('option[value="quality"]').disabled = !hasQuality;
    if (this.sortBy === "quality" && !hasQuality) this.sortSelect.value = this.sortBy = "size";
    this.render();
  }

  sorted() {
    const list = [...this.classes];
    // quality_nyquist is the half-set FRC resolution as a fraction of Nyquist (present whether
    // the pixel size is known or not): larger is better; classes without one last.
    if (this.sortBy === "quality") list.sort((a, b) => (b.quality_nyquist ?? -1) - (a.quality_nyquist ?? -1) || b.count - a.count);
    else if (this.sortBy === "class") list.sort((a, b) => a.class - b.class);
    else list.sort((a, b) => b.count - a.count || a.class - b.class);
    return list;
  }

  render() {
    const total = this.classes.reduce((s, c) => s + c.count, 0) || 1;
    replace(this.grid, this.sorted().map((c) => this.card(c, total)));
    this.updateExport();
  }

  card(c, total) {
    const fraction = Number.isFinite(c.fraction) ? c.fraction : c.count / total;
    const tick = h("input", {
      type: "checkbox",
      "aria-label": `select class ${c.class}`,
      checked: this.selected.has(c.class),
      on: { change: (e) => { e.target.checked ? this.selected.add(c.class) : this.selected.delete(c.class); this.updateExport(); } },
    });
    const image = h(
      "button",
      { type: "button", class: "class-image", title: `show the members of class ${c.class}`, on: { click: () => this.openMembers(c.class, 0) } },
      h("img", {
        // full-size averages get their own address, so the model-size picture is not reused
        src: apiUrl(`/api/jobs/${this.jobId}/rounds/${this.round}/classes/${c.class}/average.png`, { full: c.full_size ? 1 : undefined }),
        alt: `average of class ${c.class}`,
        width: "112",
        height: "112",
      }),
    );
    const quality = qualityLabel(c);
    const empty = c.empty
      ? h("span", { class: "badge empty-boxes", text: "empty boxes", title: "these boxes score no better than boxes of noise alone: ice with no particle" })
      : null;
    return h(
      "figure",
      { class: `class-card${this.membersOf === c.class ? " open" : ""}${c.empty ? " empty" : ""}`, dataset: { cls: String(c.class) } },
      image,
      h(
        "figcaption",
        {},
        h("label", { class: "row tight" }, tick, h("span", { class: "swatch", style: `background:${classColour(c.class)}` }), h("strong", { text: `class ${c.class}` })),
        h("span", { class: "muted", text: `${fmtInt(c.count)} · ${fmtPercent(fraction)}` }),
        empty,
        quality,
      ),
    );
  }

  tickAll(on) {
    this.selected = new Set(on ? this.classes.map((c) => c.class) : []);
    this.render();
  }

  updateExport() {
    const n = this.selected.size;
    const particles = this.classes.filter((c) => this.selected.has(c.class)).reduce((s, c) => s + c.count, 0);
    this.exportButton.disabled = n === 0 || this.round === null;
    this.reclassifyButton.disabled = n === 0 || this.round === null;
    this.exportButton.textContent = n ? `Export ${n} class${n > 1 ? "es" : ""} (${fmtInt(particles)} particles)` : "Export subset";
  }

  async exportSubset() {
    const classes = [...this.selected].sort((a, b) => a - b);
    const format = this.formatSelect.value;
    this.exportNote.textContent = "Preparing the subset…";
    this.exportButton.disabled = true;
    try {
      const response = await api(`/api/jobs/${this.jobId}/subset`, { method: "POST", json: { round: this.round, classes, format }, raw: true });
      const name = await saveResponse(response, `job${this.jobId}_round${this.round}_classes${classes.join("-")}.${format}`);
      this.exportNote.textContent = `Saved ${name}.`;
    } catch (err) {
      this.exportNote.textContent = `Export failed: ${err.message}`;
    } finally {
      this.updateExport();
    }
  }

  /** A derived dataset of the ticked classes' particles, then the job form for it. */
  async reclassify() {
    const classes = [...this.selected].sort((a, b) => a - b);
    this.exportNote.textContent = "Making a dataset of these classes…";
    this.reclassifyButton.disabled = true;
    try {
      const dataset = await api(`/api/datasets/${this.datasetId}/subsets`, { method: "POST", json: { job_id: this.jobId, round: this.round, classes } });
      this.exportNote.textContent = `Dataset ${dataset.name} made.`;
      window.location.hash = `#/new/${encodeURIComponent(dataset.id)}`;
    } catch (err) {
      this.exportNote.textContent = `Could not make the dataset: ${err.message}`;
    } finally {
      this.updateExport();
    }
  }

  closeMembers() {
    this.membersOf = null;
    this.members.hidden = true;
    this.members.replaceChildren();
    for (const card of this.grid.querySelectorAll(".class-card.open")) card.classList.remove("open");
  }

  /** A page of class `cls`'s member particles. */
  async openMembers(cls, offset) {
    this.membersOf = cls;
    this.membersOffset = offset;
    for (const card of this.grid.querySelectorAll(".class-card")) card.classList.toggle("open", card.dataset.cls === String(cls));
    let page;
    try {
      page = await api(`/api/jobs/${this.jobId}/rounds/${this.round}/classes/${cls}/members?offset=${offset}&limit=${MEMBERS_PAGE}`);
    } catch (err) {
      replace(this.members, h("p", { class: "error", text: `Members could not be loaded: ${err.message}` }));
      this.members.hidden = false;
      return;
    }
    if (this.membersOf !== cls) return;
    const last = Math.min(offset + page.indices.length, page.total);
    const prev = h("button", { type: "button", class: "small", text: "‹ Previous", disabled: offset === 0, on: { click: () => this.openMembers(cls, Math.max(0, offset - MEMBERS_PAGE)) } });
    const next = h("button", { type: "button", class: "small", text: "Next ›", disabled: last >= page.total, on: { click: () => this.openMembers(cls, offset + MEMBERS_PAGE) } });
    const close = h("button", { type: "button", class: "small", text: "Close", on: { click: () => this.closeMembers() } });
    replace(
      this.members,
      h(
        "div",
        { class: "row spread wrap" },
        h("h3", { text: `Class ${cls}: particles ${fmtInt(page.total ? offset + 1 : 0)}–${fmtInt(last)} of ${fmtInt(page.total)}` }),
        h("span", { class: "row" }, prev, next, close),
      ),
      h(
        "div",
        { class: "member-grid" },
        page.indices.map((i) =>
          h(
            "figure",
            { class: "member" },
            h("img", { src: apiUrl(`/api/datasets/${this.datasetId}/particles/${i}.png`, { size: 64 }), alt: `particle ${i}`, width: "64", height: "64", loading: "lazy" }),
            h("figcaption", { text: `#${i}` }),
          ),
        ),
      ),
    );
    this.members.hidden = false;
  }
}

/** The FRC figure of a class: in Å when the pixel size is known, else as a fraction of Nyquist. */
export function qualityLabel(c) {
  const title = "where the FRC of two half-set averages falls below 0.5";
  if (Number.isFinite(c.quality)) return h("span", { class: "muted quality", text: `FRC ${c.quality.toFixed(1)} Å`, title: `resolution ${title}` });
  if (Number.isFinite(c.quality_nyquist)) {
    return h("span", { class: "muted quality", text: `FRC ${c.quality_nyquist.toFixed(2)} × Nyquist · pixel size unknown`, title: `frequency ${title}, as a fraction of Nyquist; the pixel size is unknown, so no Å` });
  }
  return null;
}
