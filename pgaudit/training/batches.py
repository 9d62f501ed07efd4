"""Training batches: normal images + their foreground-aware pseudo-anomalies, built in workers.

Each DataLoader item is a whole batch. Its randomness (jitter, FAPA) comes from a NumPy generator
seeded by ``(seed, epoch, batch index)``, and the shuffling from a torch generator seeded by
``(seed, epoch)``: the batches do not depend on the number of workers and an interrupted run
resumed at epoch ``k`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pgaudit.fapa import FapaConfig, make_pseudo_anomalies
from pgaudit.models.detector import mask_to_grid


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class BatchSpec:
    """Which images make one batch, and where its randomness comes from."""

    epoch: int
    index: int
    items: tuple[int, ...]


class EpochBatches(Sampler[BatchSpec]):
    """Shuffled batches of an epoch (the last short batch dropped when there is more than one)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, max(1, batch_size), seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def __iter__(self) -> Iterator[BatchSpec]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 1))
        order = torch.randperm(self.n, generator=gen).tolist()
        size = min(self.batch_size, self.n)
        for index in range(len(self)):
            yield BatchSpec(self.epoch, index, tuple(order[index * size : (index + 1) * size]))


def jitter(images: Tensor, strength: float, rng: np.random.Generator) -> Tensor:
    """Light colour jitter (brightness, contrast, saturation within ±``strength``), occasional blur."""
    if strength <= 0:
        return images
    b = images.shape[0]
    factors = torch.from_numpy(rng.uniform(1 - strength, 1 + strength, size=(3, b, 1, 1, 1)))
    factors = factors.to(images.dtype)
    out = images * factors[0]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * factors[1] + mean
    gray = (0.299 * out[:, :1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]).expand_as(out)
    out = (out - gray) * factors[2] + gray
    blur = torch.from_numpy(rng.random(b) < 0.1)
    if blur.any():
        kernel = torch.tensor([0.25, 0.5, 0.25], dtype=out.dtype)
        kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
        smoothed = F.conv2d(F.pad(out[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        out[blur] = smoothed
    return out.clamp(0, 1)


class PseudoAnomalyBatches(Dataset):
    """Maps a :class:`BatchSpec` to a training batch (run inside DataLoader workers).

    Returns ``{"images": [B,3,S,S], "anomalies": [B,3,S,S], "masks": [B,S,S] (pixel),
    "labels": [B,h,w] (patch labels, any-pixel rule)}``.
    """

    def __init__(
        self,
        dataset: Dataset,
        grid: tuple[int, int],
        fapa: FapaConfig,
        seed: int,
        jitter_strength: float,
    ) -> None:
        self.dataset, self.grid, self.fapa = dataset, grid, fapa
        self.seed, self.jitter_strength = seed, jitter_strength

    def __len__(self) -> int:  # indexed by BatchSpec, not by position
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, spec: BatchSpec) -> dict[str, Tensor]:
        items = [self.dataset[i] for i in spec.items]
        images = torch.stack([it["image"] for it in items]).float()
        foreground = torch.stack([it["foreground"] for it in items]).float()
        rng = np.random.default_rng(derive_seed(self.seed, spec.epoch, spec.index, 2))
        images = jitter(images, self.jitter_strength, rng)
        anomalies, masks = make_pseudo_anomalies(images, foreground, rng, self.fapa)
        return {
            "images": images,
            "anomalies": anomalies,
            "masks": masks,
            "labels": mask_to_grid(masks, self.grid),
        }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def batch_loader(
    dataset: Dataset,
    grid: tuple[int, int],
    fapa: FapaConfig,
    *,
    batch_size: int,
    seed: int,
    jitter_strength: float,
    num_workers: int = 0,
) -> tuple[DataLoader, EpochBatches]:
    """A DataLoader of FAPA training batches and its sampler (call ``sampler.set_epoch(e)``)."""
    sampler = EpochBatches(len(dataset), batch_size, seed)  # type: ignore[arg-type]
    loader = DataLoader(
        PseudoAnomalyBatches(dataset, grid, fapa, seed, jitter_strength),
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )
    return loader, sampler
