"""ASPIRE RIRClass2D as a K-class partition, run inside ASPIRE's own environment (.venv-aspire).

    .venv-aspire/bin/python worker/engine/aspire_child.py IN.npy K PIXEL_SIZE OUT_FOLDER

This file imports only numpy, scikit-learn and aspire (never torch or the engine), because
ASPIRE wants its own numpy. IN.npy holds the phase-flipped, normalised particles (N, L, L).

RIRClass2D (rotationally invariant bispectrum features after steerable PCA) gives each image
its 100 nearest neighbours, not a partition. To compare it with methods that return K classes,
this runs RIRClass2D.classify and cuts its neighbour graph (an edge from each image to each of
its neighbours, made symmetric) into K classes by spectral clustering. Neighbours found only
as mirror images are left out: a mirrored projection is another view here. (KMeans on the
bispectrum features instead scored about half the ARI on a development stack: 0.15 against
0.32.) Each class average is ASPIRE's BFSRAverager2D (brute-force rotation and shift
alignment) of up to 100 members against the member with the most neighbours inside the class,
as ASPIRE aligns each neighbourhood to its centre image.
Writes OUT_FOLDER/labels.npy (N,) and OUT_FOLDER/averages.npy (K, L, L).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

NEIGHBOURS = 100  # RIRClass2D's default n_nbor
MAX_MEMBERS = 100  # per class average, as ASPIRE averages its 100 nearest neighbours


def main(argv: list[str]) -> int:
    from aspire.basis import FFBBasis2D
    from aspire.classification import BFSRAverager2D, RIRClass2D
    from aspire.source import ArrayImageSource
    from scipy.sparse import csr_matrix
    from sklearn.cluster import SpectralClustering

    images = np.load(argv[0]).astype(np.float64)
    k, pixel_size, out = int(argv[1]), float(argv[2]), Path(argv[3])
    src = ArrayImageSource(images, pixel_size=pixel_size)
    n = len(images)
    rir = RIRClass2D(
        src,
        fspca_components=min(400, n // 2),
        bispectrum_components=min(300, n // 2),
        n_nbor=min(NEIGHBOURS, n),
        seed=0,
    )
    neighbours, mirrored, _ = rir.classify()
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    keep = ~mirrored.ravel() & (neighbours.ravel() != rows)
    graph = csr_matrix((np.ones(keep.sum()), (rows[keep], neighbours.ravel()[keep])), shape=(n, n))
    graph = graph + graph.T
    labels = (
        SpectralClustering(k, affinity="precomputed", assign_labels="cluster_qr", random_state=0)
        .fit_predict(graph)
        .astype(np.int64)
    )

    basis = FFBBasis2D(src.L, dtype=src.dtype)
    averager = BFSRAverager2D(basis, src)
    averages = np.zeros((k, src.L, src.L), dtype=np.float32)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        inside = np.asarray(graph[members][:, members].sum(axis=1)).ravel()
        members = members[np.argsort(-inside, kind="stable")][:MAX_MEMBERS]  # centre image first
        result = averager.average(members[None], np.zeros((1, len(members)), dtype=bool))
        averages[c] = np.asarray(result.asnumpy())[0]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "labels.npy", labels)
    np.save(out / "averages.npy", averages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
