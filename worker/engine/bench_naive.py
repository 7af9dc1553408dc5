"""A naive pipeline built like the original program, as the benchmark's baseline.

It does the same work as one round of the reference method, the way the original program did:
one image file per particle read in `__getitem__` (PIL, then normalise and Fourier-crop that
image alone), a same-class partner found by rejection sampling, a DataLoader collating pairs,
and embedding one particle at a time. Only the benchmark uses it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from worker.engine.model import ContrastiveLoss, SiameseNetwork


def write_image_files(images: np.ndarray, folder: Path) -> list[Path]:
    """One 16-bit PNG per particle, as a folder of particle images would hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    low, high = np.percentile(images, [0.1, 99.9])
    scaled = np.clip((images - low) / (high - low), 0, 1) * 65535
    for i, image in enumerate(scaled.astype(np.uint16)):
        path = folder / f"{i:06d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def load_image(path: Path, size: int) -> torch.Tensor:
    image = np.asarray(Image.open(path), dtype=np.float32)
    image = (image - image.mean()) / (image.std() or 1.0)
    box = image.shape[0]
    if box > size:
        spectrum = np.fft.fftshift(np.fft.fft2(image))
        lo = box // 2 - size // 2
        spectrum = spectrum[lo : lo + size, lo : lo + size]
        image = np.real(np.fft.ifft2(np.fft.ifftshift(spectrum))) * (size * size) / (box * box)
    return torch.from_numpy(image.astype(np.float32))[None]


class PairFolder(Dataset):
    """The original program's dataset: two files read per item, partners by rejection."""

    def __init__(self, paths: list[Path], labels: np.ndarray, size: int) -> None:
        self.paths, self.labels, self.size = paths, [int(x) for x in labels], size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        first = random.randrange(len(self.paths))
        if random.random() < 0.5:
            while True:
                second = random.randrange(len(self.paths))
                if self.labels[second] == self.labels[first]:
                    break
        else:
            second = random.randrange(len(self.paths))
        unlike = float(self.labels[first] != self.labels[second])
        return (
            load_image(self.paths[first], self.size),
            load_image(self.paths[second], self.size),
            torch.tensor(unlike),
        )


def run_naive_round(
    paths: list[Path],
    labels: np.ndarray,
    size: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> dict:
    """Train and embed like the original program; return timings."""
    random.seed(seed)
    torch.manual_seed(seed)
    network = SiameseNetwork(size)
    criterion = ContrastiveLoss(2.0)
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
    loader = DataLoader(PairFolder(paths, labels, size), batch_size=batch_size, shuffle=True, num_workers=0)
    started = time.perf_counter()
    network.train()
    for _ in range(epochs):
        for x1, x2, unlike in loader:
            loss = criterion(network(x1), network(x2), unlike)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    trained = time.perf_counter()
    network.eval()
    embedding = []
    with torch.no_grad():
        for path in paths:
            embedding.append(network(load_image(path, size)[None]).numpy()[0])
    embedded = time.perf_counter()
    return {
        "train_seconds": trained - started,
        "embed_seconds": embedded - trained,
        "pairs": epochs * len(paths),
        "embedding": np.stack(embedding),
    }
