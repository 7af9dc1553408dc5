// The per-round embedding in its binary form (GET .../embedding?format=binary): 10 bytes a
// particle instead of about 40 of JSON, and no parse: the columns are viewed in place.
//
// Layout (little-endian, see backend/embedding_binary.py): "CCE1", uint32 n, uint32 k, uint32 0,
// float32 x[n], float32 y[n], uint16 class[n] (1-based).

import { api } from "./api.js";

const MAGIC = "CCE1";
const HEADER_BYTES = 16;

/** {n, k, x: Float32Array, y: Float32Array, labels: Uint16Array} from the response's bytes. */
export function decodeEmbedding(buffer) {
  if (buffer.byteLength < HEADER_BYTES) throw new Error("The embedding is cut short.");
  const head = new DataView(buffer, 0, HEADER_BYTES);
  const magic = String.fromCharCode(head.getUint8(0), head.getUint8(1), head.getUint8(2), head.getUint8(3));
  if (magic !== MAGIC) throw new Error("The server did not send a binary embedding.");
  const n = head.getUint32(4, true);
  const k = head.getUint32(8, true);
  if (buffer.byteLength < HEADER_BYTES + 10 * n) throw new Error(`The embedding of ${n} particles is cut short.`);
  // Typed arrays read the platform's byte order; every browser this page runs on is little-endian.
  return {
    n,
    k,
    x: new Float32Array(buffer, HEADER_BYTES, n),
    y: new Float32Array(buffer, HEADER_BYTES + 4 * n, n),
    labels: new Uint16Array(buffer, HEADER_BYTES + 8 * n, n),
  };
}

/** Fetch and decode round r of a job's embedding in one view: "pca" (every round) or "umap"
 * (the last round of a job run with umap on; an ApiError with status 404 otherwise). The result
 * also says which `view` it is and which `views` the round has (X-Embedding-Views). */
export async function fetchEmbedding(jobId, round, view = "pca") {
  const query = view === "pca" ? "format=binary" : `format=binary&view=${encodeURIComponent(view)}`;
  const response = await api(`/api/jobs/${jobId}/rounds/${round}/embedding?${query}`, { raw: true });
  const views = (response.headers.get("X-Embedding-Views") || "pca").split(",").filter(Boolean);
  return { ...decodeEmbedding(await response.arrayBuffer()), view, views };
}
