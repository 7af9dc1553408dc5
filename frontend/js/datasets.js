// Datasets panel: drag-and-drop or pick files, upload with a progress bar (large files in
// resumable pieces), import a path that is already on the server, list what is there.

import { api, uploadFiles, apiUrl } from "./api.js";
import { fmtBytes, fmtInt, h, replace } from "./dom.js";
import { uploadResumable } from "./resumable.js";

const ACCEPTED = /\.(mrcs|mrc|star|cs)$/i;
const THUMBNAILS = 10;
// From this size on, files go in resumable pieces (tus), so a dropped connection costs a piece.
const RESUMABLE_FROM_BYTES = 32 * 1024 * 1024;

export class DatasetsPanel {
  /** onChange(datasets) runs after every refresh; onUse(dataset) when "New job" is pressed. */
  constructor({ onChange, onUse }) {
    this.onChange = onChange;
    this.onUse = onUse;
    this.datasets = [];
    this.upload = null;
    this.dropzone = document.getElementById("dropzone");
    this.fileInput = document.getElementById("file-input");
    this.nameInput = document.getElementById("dataset-name");
    this.apixInput = document.getElementById("dataset-apix");
    this.status = document.getElementById("upload-status");
    this.error = document.getElementById("upload-error");
    this.list = document.getElementById("dataset-list");
    this.importForm = document.getElementById("import-form");
    this.importPath = document.getElementById("import-path");
    this.bindDropzone();
    this.importForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.importFromPath();
    });
    document.getElementById("upload-abort").addEventListener("click", () => this.upload?.abort());
  }

  bindDropzone() {
    const zone = this.dropzone;
    const stop = (event) => {
      event.preventDefault();
      event.stopPropagation();
    };
    zone.addEventListener("dragenter", (e) => {
      stop(e);
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragover", (e) => {
      stop(e);
      e.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", (e) => {
      stop(e);
      if (!zone.contains(e.relatedTarget)) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (e) => {
      stop(e);
      zone.classList.remove("dragging");
      this.start([...e.dataTransfer.files]);
    });
    zone.addEventListener("click", (e) => {
      if (e.target === zone || e.target.tagName === "P" || e.target.tagName === "STRONG") this.fileInput.click();
    });
    zone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        this.fileInput.click();
      }
    });
    this.fileInput.addEventListener("change", () => {
      const files = [...this.fileInput.files];
      this.fileInput.value = "";
      this.start(files);
    });
    // A file dropped outside the zone would otherwise make the browser navigate away.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
  }

  showError(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
  }

  /** Upload the chosen files as one dataset. */
  async start(files) {
    if (!files.length || this.upload) return;
    this.showError("");
    const wrong = files.filter((f) => !ACCEPTED.test(f.name));
    if (wrong.length) {
      this.showError(`Not a particle file (.mrcs, .mrc, .star or .cs): ${wrong.map((f) => f.name).join(", ")}`);
      return;
    }
    const apix = this.apixInput.value.trim();
    if (apix && !(Number(apix) > 0)) {
      this.showError("The pixel size must be a positive number of Å, or left empty.");
      return;
    }
    const total = files.reduce((sum, f) => sum + f.size, 0);
    document.getElementById("upload-files").textContent =
      files.length === 1 ? files[0].name : `${files.length} files: ${files.map((f) => f.name).join(", ")}`;
    const bar = document.getElementById("upload-progress");
    const text = document.getElementById("upload-text");
    bar.value = 0;
    text.textContent = `0 B of ${fmtBytes(total)}`;
    this.status.hidden = false;
    this.dropzone.classList.add("busy");

    // Speed over the last few seconds, so it follows the current rate rather than the average.
    const samples = [{ t: performance.now(), loaded: 0 }];
    const onProgress = ({ loaded, total: sent }) => {
      const now = performance.now();
      samples.push({ t: now, loaded });
      while (samples.length > 2 && now - samples[0].t > 3000) samples.shift();
      const dt = (now - samples[0].t) / 1000;
      const rate = dt > 0 ? (loaded - samples[0].loaded) / dt : 0;
      bar.value = sent ? loaded / sent : 0;
      text.textContent =
        loaded >= sent
          ? `${fmtBytes(sent)} sent; the server is checking the files…`
          : `${fmtBytes(loaded)} of ${fmtBytes(sent)} · ${fmtBytes(rate)}/s`;
    };
    const notice = document.getElementById("upload-notice");
    const onNotice = (message) => {
      notice.textContent = message;
      notice.hidden = !message;
    };
    if (total >= RESUMABLE_FROM_BYTES) {
      const fields = { name: this.nameInput.value.trim(), pixelSize: apix ? Number(apix) : null };
      this.upload = uploadResumable(files, fields, onProgress, onNotice);
    } else {
      const url = apix ? `/api/datasets?pixel_size=${encodeURIComponent(Number(apix))}` : "/api/datasets";
      this.upload = uploadFiles(url, files, { name: this.nameInput.value.trim() }, onProgress);
    }
    try {
      const dataset = await this.upload.promise;
      this.nameInput.value = "";
      this.apixInput.value = "";
      await this.refresh();
      this.onUse?.(dataset, { scroll: false });
    } catch (err) {
      this.showError(err.message);
    } finally {
      this.upload = null;
      onNotice("");
      this.status.hidden = true;
      this.dropzone.classList.remove("busy");
    }
  }

  /** The pixel size typed in, as a number; null when empty, NaN when not a positive number. */
  chosenApix() {
    const apix = this.apixInput.value.trim();
    if (!apix) return null;
    return Number(apix) > 0 ? Number(apix) : NaN;
  }

  /** Register a file that lies on the server (under its import roots) as a dataset: no upload. */
  async importFromPath() {
    const path = this.importPath.value.trim();
    this.showError("");
    if (!path) {
      this.showError("Give the path of a .mrcs, .star or .cs file on the server.");
      return;
    }
    const apix = this.chosenApix();
    if (Number.isNaN(apix)) {
      this.showError("The pixel size must be a positive number of Å, or left empty.");
      return;
    }
    const body = { path };
    const name = this.nameInput.value.trim();
    if (name) body.name = name;
    if (apix !== null) body.pixel_size = apix;
    const button = document.getElementById("import-button");
    button.disabled = true;
    button.textContent = "Importing…";
    try {
      const dataset = await api("/api/datasets/import", { method: "POST", json: body });
      this.importPath.value = "";
      this.nameInput.value = "";
      this.apixInput.value = "";
      await this.refresh();
      this.onUse?.(dataset, { scroll: false });
    } catch (err) {
      this.showError(err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Import";
    }
  }

  async refresh() {
    try {
      this.datasets = await api("/api/datasets");
    } catch (err) {
      replace(this.list, h("p", { class: "error", text: `Datasets could not be loaded: ${err.message}` }));
      return;
    }
    this.render();
    this.onChange?.(this.datasets);
  }

  render() {
    if (!this.datasets.length) {
      replace(this.list, h("p", { class: "muted", text: "No datasets yet: upload a particle stack." }));
      return;
    }
    const known = new Map([...this.list.querySelectorAll(".dataset-card")].map((c) => [c.dataset.id, c]));
    const cards = this.datasets.map((d) => known.get(String(d.id)) || this.card(d));
    replace(this.list, cards);
  }

  card(d) {
    const pixel = Number(d.pixel_size);
    const meta = [
      `${fmtInt(d.n_particles)} particles`,
      `box ${d.box_size} px`,
      d.pixel_size_known === false || !Number.isFinite(pixel) ? "pixel size unknown" : `${pixel.toFixed(3)} Å/px`,
      fmtBytes(d.size_bytes),
    ];
    if (d.has_ctf) meta.push("CTF");
    const origin = datasetOrigin(d);
    const strip = h("div", { class: "thumb-strip" });
    const count = Math.min(THUMBNAILS, d.n_particles || 0);
    for (let i = 0; i < count; i++) {
      strip.append(
        h("img", {
          src: apiUrl(`/api/datasets/${d.id}/particles/${i}.png`, { size: 64 }),
          alt: `particle ${i}`,
          title: `particle ${i}`,
          width: "56",
          height: "56",
          loading: "lazy",
        }),
      );
    }
    const files = (d.files || []).join(", ");
    return h(
      "article",
      { class: "dataset-card", dataset: { id: String(d.id) } },
      h(
        "div",
        { class: "row spread" },
        h("h3", { class: "dataset-name", text: d.name || `dataset ${d.id}`, title: files }),
        h(
          "span",
          { class: "row" },
          h("button", { type: "button", class: "small", text: "New job", on: { click: () => this.onUse?.(d, { scroll: true }) } }),
          h("button", { type: "button", class: "small danger", text: "Delete", on: { click: () => this.remove(d) } }),
        ),
      ),
      h("p", { class: "meta", text: meta.join(" · ") }),
      origin ? h("p", { class: "muted origin", text: origin }) : h("p", { class: "muted files", text: files }),
      strip,
    );
  }

  async remove(d) {
    if (!window.confirm(`Delete dataset "${d.name}" and its files?`)) return;
    try {
      await api(`/api/datasets/${d.id}`, { method: "DELETE" });
      this.showError("");
    } catch (err) {
      this.showError(err.message);
    }
    await this.refresh();
  }
}

/** Where a derived or imported dataset came from, in words; "" for an uploaded one. */
export function datasetOrigin(d) {
  if (!d.parent_id) return d.imported_from ? `imported from ${d.imported_from} (read in place)` : "";
  const classes = d.source_classes && d.source_classes.length ? `, classes ${d.source_classes.join(", ")}` : "";
  const job = d.source_job_id ? ` by job #${d.source_job_id} round ${d.source_round}${classes}` : "";
  return `subset of dataset ${d.parent_id}${job}`;
}
