"""Training batches: normal images + their foreground-aware pseudo-anomalies, built in workers.

Each DataLoader item is a whole batch. The shuffling comes from a torch generator seeded by
``(seed, epoch)``; each image's randomness (jitter, FAPA, the PGD start) from its own generator
seeded by ``(seed, epoch, batch index, position in the batch)``. So the batches depend neither on
the number of DataLoader workers nor on the number of training processes (with N processes,
:class:`EpochBatches` gives each its equal share of every global batch), and an interrupted run
resumed at epoch ``k`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pgaudit.data.grid import mask_to_grid
from pgaudit.fapa import FapaConfig, make_pseudo_anomalies


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class BatchSpec:
    """Which images make one batch (or this process's share of it), and where its randomness
    comes from: ``items[k]`` is at position ``offset + k`` of global batch ``index``."""

    epoch: int
    index: int
    items: tuple[int, ...]
    offset: int = 0


def image_seeds(
    seed: int, epoch: int, index: int, positions: Iterable[int], stream: int
) -> list[int]:
    """One seed per image, from its position in global batch ``index`` (not from the process)."""
    return [derive_seed(seed, epoch, index, position, stream) for position in positions]


class PerImageRandomState(np.random.RandomState):
    """A ``RandomState`` whose ``uniform`` / ``standard_normal`` draws of shape ``(n, ...)`` take
    row ``i`` from its own seed: PGD's random start per image, independent of the batch split."""

    def __init__(self, seeds: Sequence[int]) -> None:
        super().__init__()
        self.seeds = [int(s) % 2**32 for s in seeds]

    def _rest(self, size: int | Sequence[int] | None) -> tuple[int, ...]:
        shape = (size,) if isinstance(size, int) else tuple(size or ())
        if not shape or shape[0] != len(self.seeds):
            raise ValueError(f"draws must have {len(self.seeds)} rows, asked for {shape}")
        return shape[1:]

    def uniform(  # type: ignore[override]
        self, low: float = 0.0, high: float = 1.0, size: int | Sequence[int] | None = None
    ) -> np.ndarray:
        rest = self._rest(size)
        return np.stack([np.random.RandomState(s).uniform(low, high, rest) for s in self.seeds])

    def standard_normal(  # type: ignore[override]
        self, size: int | Sequence[int] | None = None
    ) -> np.ndarray:
        rest = self._rest(size)
        return np.stack([np.random.RandomState(s).standard_normal(rest) for s in self.seeds])


class EpochBatches(Sampler[BatchSpec]):
    """Shuffled batches of an epoch (the last short batch dropped when there is more than one).

    With ``world_size`` > 1, process ``rank`` gets the ``rank``-th of ``world_size`` equal
    contiguous shares of every batch (the batch size must be a multiple of ``world_size``).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, max(1, batch_size), seed, epoch
        self.rank, self.world_size = rank, world_size
        if self.global_size % world_size:
            raise ValueError(f"batch size {self.global_size} is not a multiple of {world_size}")

    @property
    def global_size(self) -> int:
        """Images per global batch (all processes together)."""
        return min(self.batch_size, self.n)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def __iter__(self) -> Iterator[BatchSpec]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 1))
        order = torch.randperm(self.n, generator=gen).tolist()
        size = self.global_size
        share = size // self.world_size
        first = self.rank * share
        for index in range(len(self)):
            items = order[index * size + first : index * size + first + share]
            yield BatchSpec(self.epoch, index, tuple(items), offset=first)


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


def turn(
    images: Tensor, masks: Tensor, kind: str, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """The same random flip ("flips") or flip and 90° turn ("dihedral") of images and masks."""
    if kind == "none":
        return images, masks
    flip_h, flip_v = (bool(x) for x in rng.random(2) < 0.5)
    turns = int(rng.integers(4)) if kind == "dihedral" else 0
    dims = [d for d, on in ((-1, flip_h), (-2, flip_v and kind == "flips")) if on]
    out = []
    for x in (images, masks):
        x = x.flip(dims) if dims else x
        out.append(torch.rot90(x, turns, dims=(-2, -1)) if turns else x)
    return out[0], out[1]


class PseudoAnomalyBatches(Dataset):
    """Maps a :class:`BatchSpec` to a training batch (run inside DataLoader workers).

    Returns ``{"images": [B,3,S,S], "anomalies": [B,3,S,S], "masks": [B,S,S] (pixel),
    "labels": [B,h,w] (patch labels, any-pixel rule), "indices": [B] (dataset positions)}``.
    """

    def __init__(
        self,
        dataset: Dataset,
        grid: tuple[int, int],
        fapa: FapaConfig,
        seed: int,
        jitter_strength: float,
        augment: str = "none",
    ) -> None:
        self.dataset, self.grid, self.fapa = dataset, grid, fapa
        self.seed, self.jitter_strength, self.augment = seed, jitter_strength, augment

    def __len__(self) -> int:  # indexed by BatchSpec, not by position
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, spec: BatchSpec) -> dict[str, Tensor]:
        parts: list[tuple[Tensor, Tensor, Tensor]] = []
        positions = range(spec.offset, spec.offset + len(spec.items))
        seeds = image_seeds(self.seed, spec.epoch, spec.index, positions, 2)
        for i, seed in zip(spec.items, seeds, strict=True):
            item = self.dataset[i]
            rng = np.random.default_rng(seed)
            image, foreground = turn(
                item["image"][None].float(), item["foreground"][None].float(), self.augment, rng
            )
            image = jitter(image, self.jitter_strength, rng)
            parts.append((image, *make_pseudo_anomalies(image, foreground, rng, self.fapa)))
        images, anomalies, masks = (torch.cat(column) for column in zip(*parts, strict=True))
        return {
            "images": images,
            "anomalies": anomalies,
            "masks": masks,
            "labels": mask_to_grid(masks, self.grid),
            "indices": torch.tensor(spec.items, dtype=torch.long),
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
    augment: str = "none",
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DataLoader, EpochBatches]:
    """A DataLoader of FAPA training batches and its sampler (call ``sampler.set_epoch(e)``);
    with ``world_size`` > 1, of this process's share of every batch."""
    size = len(dataset)  # type: ignore[arg-type]
    sampler = EpochBatches(size, batch_size, seed, rank=rank, world_size=world_size)
    loader = DataLoader(
        PseudoAnomalyBatches(dataset, grid, fapa, seed, jitter_strength, augment),
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )
    return loader, sampler
