// Small DOM and formatting helpers. Text always goes in as text nodes (never as HTML), so
// file names and server messages cannot inject markup.

/**
 * Create an element. attrs: class, text, dataset {..}, on {event: handler}, and any other
 * attribute (false/null/undefined skip it, true sets it empty). Children: nodes or strings.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") {
      el[key] = value;
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
}

export function fmtInt(n) {
  return Number.isFinite(n) ? n.toLocaleString("en-US") : "?";
}

export function fmtPercent(fraction, digits = 1) {
  return `${(100 * fraction).toFixed(digits)}%`;
}

export function fmtDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  return t.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

/** A status badge: queued, running, succeeded, failed, cancelled. */
export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, text: status });
}

/** A progress bar with a label, for jobs. */
export function progressBar(fraction, label = "") {
  const value = Math.max(0, Math.min(1, Number(fraction) || 0));
  return h(
    "span",
    { class: "job-progress" },
    h("progress", { max: "1", value: String(value), "aria-label": label || "progress" }),
    h("span", { class: "muted", text: fmtPercent(value, 0) }),
  );
}

/** Call fn at most once per `ms`, with the latest arguments. */
export function throttle(fn, ms) {
  let timer = null;
  let lastArgs = null;
  return (...args) => {
    lastArgs = args;
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn(...lastArgs);
    }, ms);
  };
}

/** Colours for classes (1-based), shared by the scatter and the gallery. */
const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173",
  "#3182bd", "#e6550d", "#31a354", "#756bb1",
];

export function classColour(cls) {
  return PALETTE[(cls - 1) % PALETTE.length];
}
