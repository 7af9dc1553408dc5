// A class-coloured density image of many points, for embeddings too large to draw point by
// point: each pixel takes the mean colour of the classes that fall in it, more opaque where
// more points fall (log scale), so dense cores and sparse outliers both stay visible.

/** The range of x and y with a small margin: {x0, x1, y0, y1}. */
export function dataBounds(x, y, margin = 0.03) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const a = x[i], b = y[i];
    if (a < x0) x0 = a;
    if (a > x1) x1 = a;
    if (b < y0) y0 = b;
    if (b > y1) y1 = b;
  }
  if (!(x1 >= x0)) return { x0: -1, x1: 1, y0: -1, y1: 1 };
  const dx = (x1 - x0 || 1) * margin, dy = (y1 - y0 || 1) * margin;
  return { x0: x0 - dx, x1: x1 + dx, y0: y0 - dy, y1: y1 + dy };
}

function rgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

/**
 * Draw the points of `data` ({x, y, labels}) that fall in `box` onto a width x height canvas
 * and return it as a PNG data URL; classes in `hidden` (a Set) are left out. colourOf(cls)
 * gives a "#rrggbb" colour.
 */
export function densityImage(data, box, { width, height, hidden = new Set(), colourOf }) {
  const cells = width * height;
  const count = new Uint32Array(cells);
  const sum = new Float32Array(cells * 3);
  const palette = new Map();
  const sx = width / (box.x1 - box.x0), sy = height / (box.y1 - box.y0);
  const { x, y, labels } = data;
  for (let i = 0; i < labels.length; i++) {
    const cls = labels[i];
    if (hidden.size && hidden.has(cls)) continue;
    const col = Math.floor((x[i] - box.x0) * sx);
    const row = Math.floor((box.y1 - y[i]) * sy); // row 0 at the top
    if (col < 0 || col >= width || row < 0 || row >= height) continue;
    let c = palette.get(cls);
    if (!c) palette.set(cls, (c = rgb(colourOf(cls))));
    const cell = row * width + col;
    count[cell]++;
    sum[3 * cell] += c[0];
    sum[3 * cell + 1] += c[1];
    sum[3 * cell + 2] += c[2];
  }
  let most = 0;
  for (let i = 0; i < cells; i++) if (count[i] > most) most = count[i];
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const px = image.data;
  const scale = 1 / Math.log1p(most || 1);
  for (let i = 0; i < cells; i++) {
    const n = count[i];
    if (!n) continue;
    px[4 * i] = sum[3 * i] / n;
    px[4 * i + 1] = sum[3 * i + 1] / n;
    px[4 * i + 2] = sum[3 * i + 2] / n;
    px[4 * i + 3] = 255 * (0.3 + 0.7 * Math.log1p(n) * scale); // a lone point still shows
  }
  context.putImageData(image, 0, 0);
  return canvas.toDataURL("image/png");
}

/** `size` particle indices drawn at random without repeats (a fixed seed: the same every time). */
export function sampleIndices(n, size, seed = 1) {
  if (size >= n) return Int32Array.from({ length: n }, (_, i) => i);
  let state = seed >>> 0;
  const random = () => {
    // mulberry32: small and good enough to spread a hover sample
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const chosen = new Set();
  while (chosen.size < size) chosen.add(Math.floor(random() * n));
  return Int32Array.from([...chosen].sort((a, b) => a - b));
}
