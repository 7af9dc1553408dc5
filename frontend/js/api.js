// Talking to the cryoclust API: JSON requests, uploads with progress, the optional API token.
//
// When the server answers 401 the page asks once for the token (concurrent requests share the
// same question), keeps it in sessionStorage and sends it as a Bearer header. EventSource, <img>
// and download links cannot set headers, so urls for them carry it as ?token=.

const TOKEN_KEY = "cryoclust.apiToken";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function currentToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/** The url with ?token= added when a token is set (for EventSource, images and links). */
export function withToken(url, params = {}) {
  const u = new URL(url, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) u.searchParams.set(key, String(value));
  }
  const token = currentToken();
  if (token) u.searchParams.set("token", token);
  return u.pathname + u.search;
}

let pendingQuestion = null;

/** Ask for the API token in a dialog; resolves true when one was entered. */
export function askToken(note = "") {
  if (pendingQuestion) return pendingQuestion;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const noteEl = document.getElementById("token-note");
  noteEl.textContent = note;
  noteEl.hidden = !note;
  input.value = "";
  pendingQuestion = new Promise((resolve) => {
    const form = document.getElementById("token-form");
    const cancel = document.getElementById("token-cancel");
    const finish = (ok) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      pendingQuestion = null;
      resolve(ok);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      finish(true);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
  return pendingQuestion;
}

/** The server's message from an error response: {"detail": "..."} or FastAPI's list form. */
export function detailFromBody(text, fallback) {
  try {
    const body = JSON.parse(text);
    const detail = body && body.detail;
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail
        .map((d) => {
          const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
          return where ? `${where}: ${d.msg}` : String(d.msg);
        })
        .join("; ");
    }
  } catch {
    // not JSON: fall through to the short text or the status line
  }
  if (text && text.length < 300 && !text.trimStart().startsWith("<")) return text.trim();
  return fallback;
}

async function tokenRefused(attempt) {
  const ok = await askToken(attempt > 0 || currentToken() ? "The server refused that token." : "");
  if (!ok) throw new ApiError(401, "An API token is needed to use this server.");
}

/**
 * fetch() for the API: JSON in and out, the token header, the server's detail as the error.
 * Options: method, json (request body), raw (return the Response, e.g. for downloads).
 */
export async function api(path, { method = "GET", json, raw = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json" };
    const token = currentToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body });
    } catch {
      throw new ApiError(0, "The server cannot be reached.");
    }
    if (response.status === 401 && attempt < 3) {
      await tokenRefused(attempt);
      continue;
    }
    if (!response.ok) {
      const text = await response.text();
      throw new ApiError(response.status, detailFromBody(text, `${response.status} ${response.statusText}`));
    }
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }
}

/**
 * Upload files as multipart form data with XMLHttpRequest, which reports upload progress.
 * onProgress({loaded, total}) is called as bytes go out. Returns {promise, abort}.
 */
export function uploadFiles(url, files, fields, onProgress) {
  let xhr = null;
  let aborted = false;
  const sendOnce = () =>
    new Promise((resolve, reject) => {
      xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("Accept", "application/json");
      const token = currentToken();
      if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) onProgress({ loaded: e.loaded, total: e.total });
      });
      xhr.addEventListener("load", () => resolve(xhr));
      xhr.addEventListener("error", () => reject(new ApiError(0, "The upload failed: the connection was lost.")));
      xhr.addEventListener("abort", () => reject(new ApiError(0, "The upload was cancelled.")));
      const form = new FormData();
      for (const [key, value] of Object.entries(fields)) {
        if (value) form.append(key, value);
      }
      for (const file of files) form.append("files", file, file.name);
      xhr.send(form);
    });
  const promise = (async () => {
    for (let attempt = 0; ; attempt++) {
      const done = await sendOnce();
      if (done.status === 401 && attempt < 3 && !aborted) {
        await tokenRefused(attempt);
        continue;
      }
      if (done.status < 200 || done.status >= 300) {
        throw new ApiError(done.status, detailFromBody(done.responseText, `${done.status} ${done.statusText}`));
      }
      return JSON.parse(done.responseText);
    }
  })();
  return {
    promise,
    abort() {
      aborted = true;
      if (xhr) xhr.abort();
    },
  };
}

/** Save a Response body as a file through a temporary object URL. */
export async function saveResponse(response, fallbackName) {
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : fallbackName;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  return name;
}
