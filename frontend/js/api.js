// Talking to the cryoclust API: JSON requests, uploads with progress, signing in.
//
// When the server answers 401 the page asks once for the API token (concurrent requests share
// the same question) and sends it to POST /api/session, which sets an HttpOnly session cookie.
// Every request after that, EventSource, <img> and downloads included, carries the cookie: the
// token is never kept by the page and never put in a URL.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The url with query parameters (for EventSource, images and links; the cookie signs them). */
export function apiUrl(url, params = {}) {
  const u = new URL(url, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) u.searchParams.set(key, String(value));
  }
  return u.pathname + u.search;
}

/** Send the token once; the server answers with the session cookie. True when accepted. */
export async function signIn(token) {
  const response = await fetch("/api/session", {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  return response.ok;
}

/** Remove the session cookie. */
export async function signOut() {
  await fetch("/api/session", { method: "DELETE" });
}

/** {signed_in, token_required} of this browser. */
export async function sessionState() {
  const response = await fetch("/api/session", { headers: { Accept: "application/json" } });
  return response.ok ? response.json() : { signed_in: false, token_required: true };
}

let pendingQuestion = null;

/** Ask for the API token in a dialog and sign in with it; resolves true when it was accepted. */
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
    const onSubmit = async (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      input.value = "";
      let ok = false;
      try {
        ok = await signIn(value);
      } catch {
        ok = false;
      }
      if (ok) {
        finish(true);
        document.dispatchEvent(new CustomEvent("cryoclust:signed-in"));
      } else {
        noteEl.textContent = "The server refused that token.";
        noteEl.hidden = false;
        input.focus();
      }
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
  const ok = await askToken(attempt > 0 ? "The server refused that token." : "");
  if (!ok) throw new ApiError(401, "An API token is needed to use this server.");
}

/**
 * fetch() for the API: JSON in and out, the token header, the server's detail as the error.
 * Options: method, json (request body), raw (return the Response, e.g. for downloads).
 */
export async function api(path, { method = "GET", json, raw = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json" };
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
