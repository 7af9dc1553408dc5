"""Vectorised sampling of training pairs by the reference rule.

The first image of a pair is drawn uniformly; with probability 0.5 its partner comes from the
same current cluster, otherwise uniformly from all particles; y = 1 when the labels differ.
Same-cluster partners are drawn without a rejection loop: particles are sorted by label once,
and a partner is an offset drawn uniformly inside the first image's label segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairSampler:
    labels: torch.Tensor  # (N,) int64 on the training device
    order: torch.Tensor  # particle indices sorted by label
    starts: torch.Tensor  # first position in `order` of each particle's label segment
    counts: torch.Tensor  # size of each particle's label segment

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> PairSampler:
        labels = labels.long()
        order = torch.argsort(labels, stable=True)
        _, segment_sizes = torch.unique_consecutive(labels[order], return_counts=True)
        segment_starts = torch.cumsum(segment_sizes, 0) - segment_sizes
        # Map each label value to its segment (labels need not be 0..k-1 or all present).
        values = torch.unique(labels)
        segment_of = torch.searchsorted(values, labels)
        return cls(labels, order, segment_starts[segment_of], segment_sizes[segment_of])

    def sample(
        self, batch: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (first, second, unlike) index tensors for one batch of pairs."""
        n = self.labels.shape[0]
        device = self.labels.device
        first = torch.randint(n, (batch,), generator=generator, device=device)
        same = torch.rand(batch, generator=generator, device=device) < 0.5
        offsets = (torch.rand(batch, generator=generator, device=device) * self.counts[first]).long()
        same_partner = self.order[self.starts[first] + offsets]
        any_partner = torch.randint(n, (batch,), generator=generator, device=device)
        second = torch.where(same, same_partner, any_partner)
        unlike = (self.labels[first] != self.labels[second]).long()
        return first, second, unlike
