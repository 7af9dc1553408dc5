// The "New job" form, built from GET /api/parameters: the engine's one definition of every job
// parameter (type, default, range or choices, help, and what "auto" means). The same range checks
// as the API catch most mistakes before the request; nothing here repeats a default or a range.

import { api } from "./api.js";
import { fmtInt, h, replace } from "./dom.js";

const AUTO = "auto";

/** The field kind of a parameter: a choice, a tri-state auto/on/off, text or a number. */
export function kindOf(p) {
  if (p.choices) return "select";
  if (p.type === "boolean") return p.default === null ? "auto-bool" : "bool";
  if (p.type === "string") return "text";
  return p.type === "integer" ? "int" : "float";
}

/** The error message for `value` ("" when fine); `limit` caps the maximum (the dataset's size). */
export function problem(p, value, limit = Infinity) {
  if (p.type === "string") {
    if (value === "") return p.default === null ? "" : "a value is needed";
    if (p.pattern && !new RegExp(p.pattern).test(value)) return p.pattern_hint || `must match ${p.pattern}`;
    return "";
  }
  if (p.type !== "integer" && p.type !== "number") return "";
  if (value === null) return p.default === null ? "" : "a number is needed"; // left empty: auto
  const most = Math.min(p.maximum ?? Infinity, limit);
  if (p.minimum != null && value < p.minimum) return `at least ${fmtInt(p.minimum)}`;
  if (value > most) return `at most ${fmtInt(most)}${most < (p.maximum ?? Infinity) ? " (the number of particles)" : ""}`;
  if (p.exclusive_minimum != null && value <= p.exclusive_minimum) return `must be above ${p.exclusive_minimum}`;
  if (p.multiple_of && value % p.multiple_of) return p.multiple_of === 2 ? "must be even" : `a multiple of ${p.multiple_of}`;
  return "";
}

export class JobForm {
  /** onCreated(job) runs after the server accepted a job. */
  constructor({ onCreated }) {
    this.onCreated = onCreated;
    this.form = document.getElementById("job-form");
    this.datasets = [];
    this.inputs = new Map();
    this.ready = this.load();
  }

  async load() {
    this.build([]);
    try {
      this.build(await api("/api/parameters"));
    } catch (err) {
      this.formError.textContent = `cannot load the job parameters: ${err.message}`;
      this.formError.hidden = false;
    }
  }

  build(parameters) {
    const chosen = this.datasetSelect?.value;
    this.inputs = new Map();
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
    for (const p of parameters) rows.push(this.field(p));
    this.formError = h("p", { class: "error", role: "alert", hidden: true });
    this.submit = h("button", { type: "submit", class: "primary", text: "Start job", disabled: parameters.length === 0 });
    const reset = h("button", { type: "button", text: "Defaults", on: { click: () => this.resetDefaults() } });
    replace(this.form, h("div", { class: "fields" }, rows), this.formError, h("div", { class: "row" }, this.submit, reset));
    if (!this.listening) {
      this.listening = true;
      this.form.addEventListener("submit", (e) => {
        e.preventDefault();
        this.send();
      });
      this.form.addEventListener("input", () => this.validate());
    }
    this.setDatasets(this.datasets);
    if (chosen) this.selectDataset(chosen);
  }

  field(p) {
    const id = `job-${p.name}`;
    const kind = kindOf(p);
    let input;
    if (kind === "select") {
      const options = [...(p.default === null ? [[AUTO, `auto: ${p.auto}`]] : []), ...p.choices.map((v) => [v, v])];
      input = h("select", { id, name: p.name }, options.map(([value, text]) => h("option", { value, text })));
    } else if (kind === "auto-bool") {
      const options = [[AUTO, `auto: ${p.auto}`], ["on", "on"], ["off", "off"]];
      input = h("select", { id, name: p.name }, options.map(([value, text]) => h("option", { value, text })));
    } else if (kind === "bool") {
      input = h("input", { id, name: p.name, type: "checkbox" });
    } else if (kind === "text") {
      const listId = `${id}-options`;
      const placeholder = p.default === null ? `auto: ${p.auto}` : "";
      input = h("input", { id, name: p.name, type: "text", list: listId, autocomplete: "off", spellcheck: "false", placeholder });
      input = h("span", { class: "with-list" }, input, h("datalist", { id: listId }, (p.examples || []).map((v) => h("option", { value: v }))));
    } else {
      input = h("input", {
        id, name: p.name, type: "number", min: p.minimum ?? p.exclusive_minimum, max: p.maximum,
        step: p.multiple_of ?? (kind === "int" ? "1" : "any"), inputmode: kind === "int" ? "numeric" : "decimal",
        placeholder: p.default === null ? `auto: ${p.auto}` : "",
      });
    }
    const error = h("span", { class: "field-error", "aria-live": "polite" });
    const control = input.querySelector?.("input") || input;
    this.inputs.set(p.name, { p, kind, control, error });
    this.setValue(kind, control, p.default);
    const label = h("label", { for: id, text: p.label });
    const help = h("span", { class: "help", text: p.help });
    if (kind === "bool") return h("div", { class: "field check" }, input, label, help, error);
    return h("div", { class: "field" }, label, input, help, error);
  }

  setValue(kind, control, value) {
    if (kind === "bool") control.checked = Boolean(value);
    else if (kind === "auto-bool") control.value = value === null ? AUTO : value ? "on" : "off";
    else if (kind === "select") control.value = value === null ? AUTO : String(value);
    else control.value = value === null ? "" : String(value);
  }

  resetDefaults() {
    for (const { p, kind, control } of this.inputs.values()) this.setValue(kind, control, p.default);
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
    let ok = this.inputs.size > 0;
    this.datasetError.textContent = ds ? "" : "choose a dataset";
    if (!ds) ok = false;
    const body = { dataset_id: ds ? ds.id : null };
    for (const { p, kind, control, error } of this.inputs.values()) {
      let value;
      let message = "";
      if (kind === "bool") value = control.checked;
      else if (kind === "auto-bool") value = control.value === AUTO ? null : control.value === "on";
      else if (kind === "select") value = control.value === AUTO ? null : control.value;
      else if (kind === "text") value = control.value.trim();
      else {
        const raw = control.value.trim();
        value = raw === "" && p.default === null ? null : Number(raw); // empty: auto, decided by the run
        const unreadable = control.validity?.badInput || (value !== null && (raw === "" || !Number.isFinite(value)));
        if (unreadable) message = "a number is needed";
        else if (value !== null && kind === "int" && !Number.isInteger(value)) message = "a whole number is needed";
      }
      // At most one class per particle: the dataset's size caps the number of classes.
      const limit = p.name === "cluster_num" && ds ? ds.n_particles : Infinity;
      if (!message) message = problem(p, value, limit);
      if (p.name === "cluster_num") control.max = String(Math.min(p.maximum ?? Infinity, limit));
      error.textContent = message;
      control.setAttribute("aria-invalid", message ? "true" : "false");
      if (message) ok = false;
      body[p.name] = kind === "text" && value === "" ? null : value;
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
