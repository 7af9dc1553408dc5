// The "New job" form: every parameter of POST /api/jobs with its default, a line of help and
// the same range checks the API makes, so most mistakes are caught before the request.

import { api } from "./api.js";
import { fmtInt, h, replace } from "./dom.js";

/** The parameters, in form order. check(value, dataset) returns an error message or "". */
export const PARAMETERS = [
  {
    name: "method", label: "Method", kind: "select", value: "pose",
    options: [
      ["reference", "reference (the original Siamese network + KMeans)"],
      ["invariant", "invariant (rotation/shift-invariant profiles, no network)"],
      ["pose", "pose (likelihood search over class, angle and shift with the CTF; network on aligned particles)"],
      ["pose-em", "pose-em (the pose search alone, without the network)"],
    ],
    help: "reference reproduces the original algorithm; invariant groups views whatever their in-plane angle and shift; pose finds each particle's class, angle and shift by likelihood, as RELION does, then trains the network on the aligned particles.",
  },
  {
    name: "cluster_num", label: "Classes", kind: "int", value: 4, min: 2, max: 1000,
    help: "Number of 2D classes (KMeans k), from 2 to the number of particles (at most 1000).",
    check: (v, ds) => {
      const most = Math.min(1000, ds ? ds.n_particles : 1000);
      return v < 2 ? "at least 2 classes" : v > most ? `at most ${fmtInt(most)}${ds && most < 1000 ? " (the number of particles)" : ""}` : "";
    },
  },
  {
    name: "learning_rate", label: "Learning rate", kind: "float", value: 5e-4, step: "any",
    help: "Adam step size; the original uses 5e-4. Must be above 0 and at most 1.",
    check: (v) => (v > 0 && v <= 1 ? "" : "must be above 0 and at most 1"),
  },
  {
    name: "epoch_num", label: "Epochs", kind: "int", value: 20, min: 1, max: 1000,
    help: "Training epochs per round (1 to 1000); one epoch is N image pairs.",
    check: (v) => (v >= 1 && v <= 1000 ? "" : "from 1 to 1000"),
  },
  {
    name: "batch_size", label: "Batch size", kind: "int", value: 128, min: 2, max: 65536,
    help: "Image pairs per training step (2 to 65536; batch normalisation needs 2).",
    check: (v) => (v >= 2 && v <= 65536 ? "" : "from 2 to 65536"),
  },
  {
    name: "round_num", label: "Rounds", kind: "int", value: 5, min: 1, max: 100,
    help: "Train-then-cluster rounds (1 to 100); each trains a fresh network on the last labels.",
    check: (v) => (v >= 1 && v <= 100 ? "" : "from 1 to 100"),
  },
  {
    name: "size", label: "Model size (px)", kind: "int", value: 64, min: 8, max: 512, step: 2,
    help: "Images are Fourier-cropped to this size before training (even, 8 to 512).",
    check: (v) => (v < 8 || v > 512 ? "between 8 and 512" : v % 2 ? "must be even" : ""),
  },
  {
    name: "seed", label: "Random seed", kind: "int", value: 0, min: 0, max: 2147483647,
    help: "Same seed, same data and same device give the same classes.",
    check: (v) => (v >= 0 && v <= 2147483647 ? "" : "from 0 to 2147483647"),
  },
  {
    name: "device", label: "Device", kind: "text", value: "", list: ["cuda:0", "cuda:1", "cpu"],
    placeholder: "the worker's own device",
    help: "cpu, cuda or cuda:N; empty lets the worker choose (its GPU, else the CPU).",
    check: (v) => (v === "" || /^(cpu|cuda(:\d{1,2})?|mps)$/.test(v) ? "" : "cpu, cuda or cuda:N"),
  },
  {
    name: "phase_flip", label: "Phase flip (CTF)", kind: "bool", value: true,
    help: "Flip phases with the CTF from the .star before training (needs defocus columns).",
  },
  {
    name: "align_averages", label: "Aligned averages", kind: "bool", value: false,
    help: "Align members in-plane before averaging, for sharper class averages.",
  },
];

export class JobForm {
  /** onCreated(job) runs after the server accepted a job. */
  constructor({ onCreated }) {
    this.onCreated = onCreated;
    this.form = document.getElementById("job-form");
    this.datasets = [];
    this.inputs = new Map();
    this.build();
  }

  build() {
    this.datasetSelect = h("select", { id: "job-dataset", name: "dataset_id", required: true, on: { change: () => this.validate() } });
    this.datasetError = h("span", { class: "field-error", "aria-live": "polite" });
    const rows = [
      h(
        "div",
        { class: "field" },
        h("label", { for: "job-dataset", text: "Dataset" }),
        this.datasetSelect,
        h("span", { class: "help", text: "The particle stack to classify." }),
        this.datasetError,
      ),
    ];
    for (const p of PARAMETERS) rows.push(this.field(p));
    this.formError = h("p", { class: "error", role: "alert", hidden: true });
    this.submit = h("button", { type: "submit", class: "primary", text: "Start job" });
    const reset = h("button", { type: "button", text: "Defaults", on: { click: () => this.resetDefaults() } });
    replace(this.form, h("div", { class: "fields" }, rows), this.formError, h("div", { class: "row" }, this.submit, reset));
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.form.addEventListener("input", () => this.validate());
  }

  field(p) {
    const id = `job-${p.name}`;
    let input;
    if (p.kind === "select") {
      input = h("select", { id, name: p.name }, p.options.map(([value, label]) => h("option", { value, text: label })));
    } else if (p.kind === "bool") {
      input = h("input", { id, name: p.name, type: "checkbox" });
    } else if (p.kind === "text") {
      const listId = `${id}-options`;
      input = h("input", { id, name: p.name, type: "text", list: listId, autocomplete: "off", spellcheck: "false", placeholder: p.placeholder });
      input = h("span", { class: "with-list" }, input, h("datalist", { id: listId }, p.list.map((v) => h("option", { value: v }))));
    } else {
      input = h("input", {
        id, name: p.name, type: "number", min: p.min, max: p.max,
        step: p.step ?? (p.kind === "int" ? "1" : "any"), inputmode: p.kind === "int" ? "numeric" : "decimal",
      });
    }
    const error = h("span", { class: "field-error", "aria-live": "polite" });
    const control = input.querySelector?.("input") || input;
    this.inputs.set(p.name, { p, control, error });
    this.setValue(p, control, p.value);
    const label = h("label", { for: id, text: p.label });
    const help = h("span", { class: "help", text: p.help });
    if (p.kind === "bool") return h("div", { class: "field check" }, input, label, help, error);
    return h("div", { class: "field" }, label, input, help, error);
  }

  setValue(p, control, value) {
    if (p.kind === "bool") control.checked = Boolean(value);
    else control.value = String(value);
  }

  resetDefaults() {
    for (const { p, control } of this.inputs.values()) this.setValue(p, control, p.value);
    this.validate();
  }

  /** New dataset list from the datasets panel; keeps the selection when it still exists. */
  setDatasets(datasets) {
    const chosen = this.datasetSelect.value;
    this.datasets = datasets;
    replace(
      this.datasetSelect,
      datasets.length ? null : h("option", { value: "", text: "upload a dataset first" }),
      datasets.map((d) => h("option", { value: String(d.id), text: `${d.name} (${fmtInt(d.n_particles)} × ${d.box_size} px)` })),
    );
    if (datasets.some((d) => String(d.id) === chosen)) this.datasetSelect.value = chosen;
    this.validate();
  }

  selectDataset(id) {
    this.datasetSelect.value = String(id);
    this.validate();
  }

  dataset() {
    return this.datasets.find((d) => String(d.id) === this.datasetSelect.value);
  }

  /** Read and check every field; returns the request body or null when something is wrong. */
  validate() {
    const ds = this.dataset();
    let ok = true;
    this.datasetError.textContent = ds ? "" : "choose a dataset";
    if (!ds) ok = false;
    const body = { dataset_id: ds ? ds.id : null };
    for (const { p, control, error } of this.inputs.values()) {
      let value;
      let message = "";
      if (p.kind === "bool") value = control.checked;
      else if (p.kind === "select") value = control.value;
      else if (p.kind === "text") value = control.value.trim();
      else {
        const raw = control.value.trim();
        value = Number(raw);
        if (raw === "" || !Number.isFinite(value)) message = "a number is needed";
        else if (p.kind === "int" && !Number.isInteger(value)) message = "a whole number is needed";
      }
      if (!message && p.check) message = p.check(value, ds);
      error.textContent = message;
      control.setAttribute("aria-invalid", message ? "true" : "false");
      if (p.name === "cluster_num") control.max = String(Math.min(1000, ds ? ds.n_particles : 1000));
      if (message) ok = false;
      body[p.name] = p.kind === "text" && value === "" ? null : value;
    }
    this.submit.disabled = !ok;
    return ok ? body : null;
  }

  async send() {
    const body = this.validate();
    if (!body) return;
    this.formError.hidden = true;
    this.submit.disabled = true;
    try {
      const job = await api("/api/jobs", { method: "POST", json: body });
      this.onCreated?.(job);
    } catch (err) {
      this.formError.textContent = err.message;
      this.formError.hidden = false;
    } finally {
      this.submit.disabled = false;
    }
  }
}
