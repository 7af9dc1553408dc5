"""ASPIRE RIRClass2D as a K-class partition, run inside ASPIRE's own environment (.venv-aspire).

    .venv-aspire/bin/python worker/engine/aspire_child.py IN.npy K PIXEL_SIZE OUT_FOLDER

This file imports only numpy, scikit-learn and aspire (never torch or the engine), because
ASPIRE wants its own numpy. IN.npy holds the phase-flipped, normalised particles (N, L, L).

RIRClass2D (rotationally invariant bispectrum features after steerable PCA) gives each image
its nearest neighbours, not a partition. To compare it with methods that return K classes,
this runs RIRClass2D's own stages (FSPCA basis, bispectrum) and then KMeans(K) on the
bispectrum features, the features its nearest-neighbour search uses. Each class average is
ASPIRE's BFSRAverager2D (brute-force rotation and shift alignment) of the class's members
against the member closest to the class centre, as ASPIRE aligns each neighbourhood to its
centre image. Mirrors are not used: a mirrored projection is another view here.
Writes OUT_FOLDER/labels.npy (N,) and OUT_FOLDER/averages.npy (K, L, L).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MAX_MEMBERS = 100  # per class average, as ASPIRE averages its 100 nearest neighbours


def main(argv: list[str]) -> int:
    from aspire.basis import Coef, FFBBasis2D
    from aspire.classification import BFSRAverager2D, RIRClass2D
    from aspire.source import ArrayImageSource
    from sklearn.cluster import KMeans

    images = np.load(argv[0]).astype(np.float64)
    k, pixel_size, out = int(argv[1]), float(argv[2]), Path(argv[3])
    src = ArrayImageSource(images, pixel_size=pixel_size)
    rir = RIRClass2D(src, fspca_components=min(400, len(images) // 2),
                     bispectrum_components=min(300, len(images) // 2), n_nbor=2, seed=0)
    rir.classify()  # the full RIRClass2D pass: FSPCA basis, bispectrum, nearest neighbours
    coef_b, _ = rir.bispectrum(Coef(rir.pca_basis, rir.pca_basis.spca_coef))
    features = np.column_stack([coef_b.real, coef_b.imag])
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=0).fit(features)
    labels = kmeans.labels_.astype(np.int64)

    basis = FFBBasis2D(src.L, dtype=src.dtype)
    averager = BFSRAverager2D(basis, src)
    averages = np.zeros((k, src.L, src.L), dtype=np.float32)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        distance = np.linalg.norm(features[members] - kmeans.cluster_centers_[c], axis=1)
        members = members[np.argsort(distance)][:MAX_MEMBERS]  # centre image first
        result = averager.average(members[None], np.zeros((1, len(members)), dtype=bool))
        averages[c] = np.asarray(result.asnumpy())[0]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "labels.npy", labels)
    np.save(out / "averages.npy", averages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
