"""Initial labels, KMeans on embeddings, and the 2-D projections (PCA, UMAP) for the scatter plot."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.decomposition import PCA

from worker.engine.kmeans import kmeans
from worker.engine.train import cpu_threads

KMEANS_INITS = 10  # k-means++ seedings tried, the best kept (scikit-learn's KMeans default was 10)
# One thread: on the busy 2-core machine two made Lloyd's chunked products 10 times slower
# (README, Benchmarks, KMeans).
KMEANS_THREADS = 1
PCA_COMPONENTS = 50
PCA_SAMPLE = 50_000  # particles the initial PCA is fitted on; every particle is then projected
PCA_OVERSAMPLES = 10  # extra random directions of the randomized SVD (as scikit-learn's)
PCA_POWER_ITERATIONS = 7  # scikit-learn's choice for few components of a large matrix
PCA_CHUNK_BYTES = 32 * 2**20  # float32 pixels converted and projected at once
UMAP_SAMPLE = 20_000  # particles the UMAP layout is fitted on; the rest are placed by `transform`
UMAP_CHUNK = 20_000  # particles placed by one `transform` call (a progress step, a cancel check)
UMAP_NEIGHBOURS = 15  # umap-learn's default
UMAP_MIN_PARTICLES = 10  # fewer: no UMAP view (its spectral start needs a few points)


def kmeans_labels(features, k: int, seed: int, device=None) -> np.ndarray:
    """KMeans labels 0..k-1, renumbered so that class 0 is the largest (ties by centroid order).
    The best of KMEANS_INITS seedings (worker/engine/kmeans.py), on `device` (default: the
    features'), on one thread on a CPU."""
    features = _as_tensor(features)
    device = torch.device(device) if device is not None else features.device
    with cpu_threads(device, KMEANS_THREADS):
        labels, _ = kmeans(features, k, seed, KMEANS_INITS, device=device)
    counts = np.bincount(labels, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(k)
    return rank[labels]


def _as_tensor(images) -> torch.Tensor:
    """A tensor view of `images` (N, ...), any float dtype and device; numpy arrays are not copied."""
    if isinstance(images, torch.Tensor):
        return images
    return torch.from_numpy(np.asarray(images))


def _sample_rows(n: int, sample: int, generator: torch.Generator) -> torch.Tensor:
    """All rows in order when there are few; else `sample` distinct rows, sorted (reads in order)."""
    if n <= sample:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:sample].sort().values


def _orthonormal(y: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of y's columns. Thin factorisations take milliseconds on one thread;
    on a busy 2-core machine the LAPACK thread pool made them 50 to 150 times slower."""
    with cpu_threads(y.device, 1):
        return torch.linalg.qr(y).Q


def principal_axes(
    images, seed: int, components: int = PCA_COMPONENTS, *, sample: int = PCA_SAMPLE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean (P,) and leading principal axes (C, P) of the flattened images, float32, fitted on
    at most `sample` of them drawn with `seed`. A randomized SVD (Halko et al. 2011, as
    scikit-learn's randomized PCA) of the centred sample, on the images' device; only the sample
    is copied to float32. Each axis's largest coefficient is positive, so the signs are fixed."""
    images = _as_tensor(images)
    generator = torch.Generator().manual_seed(seed)
    rows = _sample_rows(len(images), sample, generator)
    x = torch.empty(len(rows), images[0].numel(), device=images.device)  # float32
    step = _chunk_rows(images)
    for start in range(0, len(rows), step):  # gathered and converted a chunk at a time
        block = rows[start : start + step].to(images.device)
        x[start : start + len(block)] = images[block].reshape(len(block), -1)
    mean = x.mean(0)
    x -= mean
    m, p = x.shape
    components = max(1, min(components, m - 1, p))
    width = min(components + PCA_OVERSAMPLES, m, p)
    q = _orthonormal(x @ torch.randn(p, width, generator=generator).to(x.device))
    for _ in range(PCA_POWER_ITERATIONS):  # orthonormal between products: the small axes stay resolved
        q = _orthonormal(x @ _orthonormal(x.T @ q))
    small = q.T @ x
    with cpu_threads(small.device, 1):
        axes = torch.linalg.svd(small, full_matrices=False).Vh[:components]
    biggest = axes.abs().argmax(1, keepdim=True)
    axes *= torch.sign(axes.gather(1, biggest))
    return mean, axes


def _chunk_rows(images: torch.Tensor) -> int:
    return max(1, PCA_CHUNK_BYTES // (4 * images[0].numel()))


def project(
    images, mean: torch.Tensor, axes: torch.Tensor, on_progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """(N, C) float32 coordinates of the flattened images on the axes, chunk by chunk (a float16
    stack is converted one chunk at a time, never whole; the mean is taken off after projecting).
    on_progress(done, total) follows the chunks."""
    images = _as_tensor(images)
    out = np.empty((len(images), len(axes)), dtype=np.float32)
    offset = mean @ axes.T
    step = _chunk_rows(images)
    for start in range(0, len(images), step):
        block = images[start : start + step]
        flat = block.reshape(len(block), -1).to(mean.device, torch.float32)
        out[start : start + len(block)] = (flat @ axes.T - offset).cpu().numpy()
        if on_progress is not None:
            on_progress(start + len(block), len(images))
    return out


def pca_features(
    images,
    seed: int,
    components: int = PCA_COMPONENTS,
    *,
    sample: int = PCA_SAMPLE,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Project flattened images (a numpy array or a tensor (N, ...), float16 or float32, on any
    device) onto their leading principal components, fitted on a random sample of them."""
    mean, axes = principal_axes(images, seed, components, sample=sample)
    return project(images, mean, axes, on_progress)


def initial_labels(images, k: int, seed: int) -> np.ndarray:
    """Labels before the first round: PCA of the pixels, then KMeans (docs/architecture.md, The algorithm, step 2)."""
    return kmeans_labels(pca_features(images, seed), k, seed)


def project_2d(embedding: np.ndarray, seed: int) -> np.ndarray:
    """A 2-D PCA projection of the embeddings, float32 (N, 2)."""
    if embedding.shape[1] <= 2:
        return embedding.astype(np.float32)
    return PCA(n_components=2, random_state=seed).fit_transform(embedding).astype(np.float32)


def umap_2d(
    embedding: np.ndarray,
    seed: int,
    *,
    sample: int = UMAP_SAMPLE,
    chunk: int = UMAP_CHUNK,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray | None:
    """A 2-D UMAP layout of the embeddings, float32 (N, 2): fitted on at most `sample` of them
    drawn with `seed` (umap's random_state, which also makes it single-threaded and repeatable),
    the others placed with `transform`, `chunk` at a time. on_progress(done, total) follows the
    particles placed. None for fewer than UMAP_MIN_PARTICLES particles."""
    n = len(embedding)
    if n < UMAP_MIN_PARTICLES:
        return None
    umap = _umap_module()
    embedding = np.ascontiguousarray(embedding, dtype=np.float32)
    rows = _sample_rows(n, sample, torch.Generator().manual_seed(seed)).numpy()
    neighbours = min(UMAP_NEIGHBOURS, len(rows) - 1)
    # Exact neighbours from torch, for the fit and for `transform` (ExactSearch), so that umap
    # never builds pynndescent's index: numba compiling its nearest-neighbour descent took most
    # of a process's first layout (README, UMAP view).
    fitted = embedding[rows]
    search = ExactSearch(fitted) if len(rows) < n else None
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=neighbours,
        random_state=seed,
        transform_seed=seed,
        n_jobs=1,
        precomputed_knn=(*exact_neighbours(fitted, neighbours), search),
    )
    out = np.empty((n, 2), dtype=np.float32)
    with warnings.catch_warnings():
        # umap's advice (a graph in several pieces, as well-separated classes give) is not the
        # user's to act on, nor its notice that an index other than its own cannot transform.
        warnings.simplefilter("ignore", UserWarning)
        out[rows] = reducer.fit_transform(fitted)
        if on_progress:
            on_progress(len(rows), n)
        rest = np.setdiff1d(np.arange(n), rows, assume_unique=True)
        for start in range(0, len(rest), chunk):
            block = rest[start : start + chunk]
            out[block] = reducer.transform(embedding[block])
            if on_progress:
                on_progress(len(rows) + start + len(block), n)
    return out


def _umap_module():
    """umap, imported on first use (only the worker that draws a UMAP pays for it), with numba's
    on-disk cache switched on for the functions it compiles on first call.

    umap does not ask for the cache (pynndescent, which it imports, does), so every process
    compiled them afresh: about 10 s of a process's first layout on a 2-core machine, against
    2-3 s for the layout itself (README, *UMAP view*). With the cache (numba's own: umap's
    __pycache__, or NUMBA_CACHE_DIR; keyed by the source file and the CPU) only the first
    process on a machine compiles them, and later ones load the machine code.
    """
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    with warnings.catch_warnings():  # umap says on import that ParametricUMAP needs TensorFlow
        warnings.simplefilter("ignore", ImportWarning)
        import umap
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("umap."):
            continue
        for value in list(vars(module).values()):
            if (
                isinstance(value, CPUDispatcher)
                and value.__module__ == name
                and isinstance(value._cache, NullCache)
            ):
                value.enable_caching()
    return umap


NEIGHBOUR_ROWS = 2048  # points whose distances to all others are held at a time (2048 x N floats)


def exact_neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of the (N, D) points' k nearest points, itself first, and their Euclidean
    distances, ascending: (N, k) int64 indices and (N, k) float32 distances, as umap's
    `precomputed_knn` takes them."""
    return nearest_among(points, points, k, itself=True)


def nearest_among(
    queries: np.ndarray, points: np.ndarray, k: int, itself: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest of the (N, D) points and their Euclidean distances, ascending:
    (M, k) int64 and float32. With `itself`, the queries are the points (each one's own distance
    is then exactly 0: the matrix-product formula leaves rounding error there)."""
    q, x = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)), torch.from_numpy(points)
    indices = np.empty((len(q), k), dtype=np.int64)
    distances = np.empty((len(q), k), dtype=np.float32)
    for start in range(0, len(q), NEIGHBOUR_ROWS):
        block = torch.cdist(q[start : start + NEIGHBOUR_ROWS], x)
        if itself:
            own = torch.arange(len(block))
            block[own, own + start] = 0.0
        values, index = block.clamp_(min=0.0).topk(k, largest=False)
        indices[start : start + len(block)] = index.numpy()
        distances[start : start + len(block)] = values.numpy()
    return indices, distances


class ExactSearch:
    """The search index umap's `transform` queries, answered exactly by torch among the
    fitted points, in place of pynndescent's approximate one (umap calls `query` and reads
    `_angular_trees`)."""

    _angular_trees = False  # umap picks the approximate search's epsilon from it; unused here

    def __init__(self, fitted: np.ndarray) -> None:
        self._fitted = np.ascontiguousarray(fitted, dtype=np.float32)

    def query(self, queries: np.ndarray, k: int, epsilon: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        return nearest_among(queries, self._fitted, k)
