// Resumable uploads over the tus protocol 1.0.0 (the server's /api/uploads), for large files.
//
// Each file goes in pieces (PATCH from the offset the server holds). When the connection drops,
// the page waits, asks the server where the file stands (HEAD) and goes on from there; a page
// reloaded before the end finds the upload again (its address is kept in localStorage under the
// file's name, size and date) when the same file is chosen again. Finished files become one
// dataset through POST /api/datasets/from-uploads, checked as any upload is.

import { ApiError, api, askToken, detailFromBody } from "./api.js";

const TUS = { "Tus-Resumable": "1.0.0" };
const PIECE_BYTES = 16 * 1024 * 1024;
const MAX_TRIES = 30; // failures in a row before giving up, waiting up to 15 s between them
const RETRY_STATUSES = [0, 409, 423, 502, 503, 504];

const storageKey = (file) => `cryoclust.upload:${file.name}:${file.size}:${file.lastModified}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function base64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/** One XMLHttpRequest (it reports upload progress, fetch does not); resolves with the xhr. */
function send(method, url, headers, body, onSent, track) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    track(xhr);
    xhr.open(method, url);
    for (const [key, value] of Object.entries(headers)) xhr.setRequestHeader(key, value);
    if (onSent) xhr.upload.addEventListener("progress", (e) => onSent(e.loaded));
    xhr.addEventListener("load", () => resolve(xhr));
    xhr.addEventListener("error", () => reject(new ApiError(0, "the connection was lost")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "The upload was cancelled.")));
    xhr.send(body);
  });
}

/**
 * Upload `files` resumably and make them one dataset.
 * onProgress({loaded, total}) as bytes reach the server; onNotice(text) while it waits to resume.
 * Returns {promise, abort}; abort() stops and deletes the unfinished uploads on the server.
 */
export function uploadResumable(files, { name, pixelSize }, onProgress, onNotice = () => {}) {
  let current = null;
  let aborted = false;
  const locations = [];
  const total = files.reduce((sum, f) => sum + f.size, 0);
  const track = (xhr) => {
    current = xhr;
  };

  async function request(method, url, headers = {}, body = null, onSent = null) {
    for (let attempt = 0; ; attempt++) {
      const xhr = await send(method, url, { ...TUS, ...headers }, body, onSent, track);
      if (xhr.status === 401 && attempt < 3) {
        if (!(await askToken(attempt > 0 ? "The server refused that token." : ""))) {
          throw new ApiError(401, "An API token is needed to use this server.");
        }
        continue;
      }
      if (xhr.status < 200 || xhr.status >= 300) {
        throw new ApiError(xhr.status, detailFromBody(xhr.responseText, `${xhr.status} ${xhr.statusText}`));
      }
      return xhr;
    }
  }

  async function locate(file) {
    const known = localStorage.getItem(storageKey(file));
    if (known) {
      try {
        await request("HEAD", known);
        return known;
      } catch (err) {
        if (err.status !== 404) throw err;
        localStorage.removeItem(storageKey(file)); // gone from the server: start again
      }
    }
    const created = await request("POST", "/api/uploads", {
      "Upload-Length": String(file.size),
      "Upload-Metadata": `filename ${base64(file.name)}`,
    });
    const location = created.getResponseHeader("Location");
    localStorage.setItem(storageKey(file), location);
    return location;
  }

  async function sendFile(file, before) {
    const location = await locate(file);
    locations.push(location);
    let offset = null;
    let failures = 0;
    for (;;) {
      if (aborted) throw new ApiError(0, "The upload was cancelled.");
      try {
        if (offset === null) {
          offset = Number((await request("HEAD", location)).getResponseHeader("Upload-Offset"));
          onProgress({ loaded: before + offset, total });
        }
        if (offset >= file.size) return location;
        const piece = file.slice(offset, Math.min(file.size, offset + PIECE_BYTES));
        const start = offset;
        const answer = await request(
          "PATCH",
          location,
          { "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
          piece,
          (sent) => onProgress({ loaded: before + start + sent, total }),
        );
        offset = Number(answer.getResponseHeader("Upload-Offset"));
        onProgress({ loaded: before + offset, total });
        if (failures) onNotice("");
        failures = 0;
      } catch (err) {
        if (aborted || !RETRY_STATUSES.includes(err.status) || ++failures > MAX_TRIES) throw err;
        offset = null; // ask the server where it stands
        const wait = Math.min(15, 2 ** (failures - 1));
        onNotice(`Connection lost (${err.message}); resuming in ${wait} s from what the server holds…`);
        await sleep(wait * 1000);
      }
    }
  }

  const promise = (async () => {
    let before = 0;
    for (const file of files) {
      await sendFile(file, before);
      before += file.size;
    }
    const body = { uploads: locations.map((l) => l.split("/").pop()) };
    if (name) body.name = name;
    if (pixelSize !== null && pixelSize !== undefined) body.pixel_size = pixelSize;
    const dataset = await api("/api/datasets/from-uploads", { method: "POST", json: body });
    for (const file of files) localStorage.removeItem(storageKey(file));
    return dataset;
  })();

  return {
    promise,
    abort() {
      aborted = true;
      if (current) current.abort();
      for (const [i, location] of locations.entries()) {
        localStorage.removeItem(storageKey(files[i]));
        fetch(location, { method: "DELETE", headers: TUS }).catch(() => {});
      }
    },
  };
}
