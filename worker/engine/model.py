"""The Siamese network and contrastive loss of the reference method (docs/architecture.md, The algorithm)."""

from __future__ import annotations

import torch
from torch import nn

EMBEDDING_DIM = 20


def _conv_block(channels_in: int, channels_out: int) -> list[nn.Module]:
    return [
        nn.ReflectionPad2d(1),
        nn.Conv2d(channels_in, channels_out, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(channels_out),
    ]


class SiameseNetwork(nn.Module):
    """Three reflection-padded conv blocks (1->4->8->8) and a 500-100-20 fully connected head."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.features = nn.Sequential(*_conv_block(1, 4), *_conv_block(4, 8), *_conv_block(8, 8))
        self.head = nn.Sequential(
            nn.Linear(8 * size * size, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, 100),
            nn.ReLU(inplace=True),
            nn.Linear(100, EMBEDDING_DIM),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch (B, 1, S, S) into (B, 20)."""
        return self.head(self.features(images).flatten(1))

    def forward_pair(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward(first), forward(second)`, computed with the head run once on both batches.

        The features, and so BatchNorm's batch statistics, stay per batch; the head is row-wise,
        so one pass over 2B rows gives the same numbers while it reads its 16M weights once and
        sums their gradient inside one product instead of adding two 16M-element gradients.
        """
        features = torch.cat([self.features(first).flatten(1), self.features(second).flatten(1)])
        return self.head(features).split([len(first), len(second)])


class ContrastiveLoss(nn.Module):
    """mean((1 - y) d^2 + y max(margin - d, 0)^2), d the Euclidean distance; y = 1 for unlike pairs."""

    def __init__(self, margin: float = 2.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, first: torch.Tensor, second: torch.Tensor, unlike: torch.Tensor) -> torch.Tensor:
        distance = torch.nn.functional.pairwise_distance(first, second)
        unlike = unlike.to(distance.dtype)
        hinge = torch.clamp(self.margin - distance, min=0.0)
        return torch.mean((1 - unlike) * distance.pow(2) + unlike * hinge.pow(2))
