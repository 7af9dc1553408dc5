"""How good a classification of a simulated stack is: one definition for every method and anchor.

    from worker.engine.bench_metrics import score
    metrics = score(sim, labels, averages)

- `ari`, `nmi`: adjusted Rand index and normalised mutual information against the truth, junk
  counted as a true class of its own.
- `view_correlation`: for each true view, the class holding most of its particles; the
  correlation of that class's average with the clean view's view-specific part (the image minus
  its rotational average), after the best in-plane rotation and shift, both low-passed with the
  same Gaussian (LOW_PASS_SIGMA). Averaged over the views (`view_correlations` lists them).
  Two views that share a class both compare with that one average.
- `junk_caught`: the fraction of junk boxes that end up in junk-majority classes (None without
  junk); `particles_kept`: the fraction of real particles in classes that are not junk-majority;
  `junk_classes`: how many classes are junk-majority.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from worker.engine.align import low_pass
from worker.engine.preprocess import fourier_crop
from worker.engine.quality import view_match

LOW_PASS_SIGMA = 0.08  # cycles per pixel of the simulated box (about 25 Å at 2 Å/px)


def partition_scores(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    truth, labels = np.asarray(truth), np.asarray(labels)
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
    }


def _same_size(averages: np.ndarray, size: int) -> torch.Tensor:
    """Averages at the views' box: Fourier-cropped when larger (a smaller box is refused)."""
    tensor = torch.as_tensor(np.asarray(averages, dtype=np.float32))
    if tensor.shape[-1] < size:
        raise ValueError(f"averages of {tensor.shape[-1]} px cannot be compared with {size} px views")
    return fourier_crop(tensor, size) if tensor.shape[-1] > size else tensor


def view_correlations(
    truth: np.ndarray, labels: np.ndarray, averages: np.ndarray, clean_views: np.ndarray
) -> list[float]:
    """Per true view: view-specific correlation of its majority class's average (see above)."""
    truth, labels = np.asarray(truth), np.asarray(labels)
    views = low_pass(torch.as_tensor(np.asarray(clean_views, dtype=np.float32)), LOW_PASS_SIGMA)
    averages = low_pass(_same_size(averages, views.shape[-1]), LOW_PASS_SIGMA)
    out = []
    for v in range(len(views)):
        members = labels[truth == v]
        if len(members) == 0:
            out.append(0.0)
            continue
        c = int(np.bincount(members).argmax())
        if c >= len(averages) or not torch.any(averages[c] != 0):
            out.append(0.0)  # an empty or missing average matches nothing
            continue
        out.append(view_match(averages[c].numpy(), views[v].numpy())["anisotropic"])
    return out


def junk_scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    truth, labels = np.asarray(truth), np.asarray(labels)
    junk = truth < 0
    classes = np.unique(labels)
    junk_majority = [c for c in classes if junk[labels == c].mean() > 0.5]
    in_junk_class = np.isin(labels, junk_majority)
    real = ~junk
    return {
        "junk_boxes": int(junk.sum()),
        "junk_classes": len(junk_majority),
        "junk_caught": float(in_junk_class[junk].mean()) if junk.any() else None,
        "particles_kept": float((~in_junk_class[real]).mean()) if real.any() else None,
    }


def score(sim, labels: np.ndarray, averages: np.ndarray) -> dict:
    """Every metric of one classification of a Simulation (labels 0-based, averages (K, S, S))."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != sim.views.shape:
        raise ValueError(f"{len(labels)} labels for {len(sim.views)} particles")
    correlations = view_correlations(sim.views, labels, averages, sim.clean_views)
    return {
        **partition_scores(sim.views, labels),
        "view_correlation": float(np.mean(correlations)),
        "view_correlations": [round(c, 4) for c in correlations],
        **junk_scores(sim.views, labels),
        "classes_used": int(len(np.unique(labels))),
    }
