"""The torch Dataset over :class:`Sample` records: images, masks and foregrounds at the model size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from pgaudit.data.images import image_size_of, load_image, load_mask
from pgaudit.data.records import Sample
from pgaudit.errors import PgauditError


def check_same_size(image: Any, mask: Any) -> None:
    """Raise PgauditError naming both files when ``mask`` is not the size of ``image``."""
    image_size, mask_size = image_size_of(image), image_size_of(mask)
    if image_size != mask_size:
        raise PgauditError(
            f"{mask}: mask is {mask_size[0]}x{mask_size[1]} but its image {image} is "
            f"{image_size[0]}x{image_size[1]}; make the mask the same size as the image."
        )


class AnomalyDataset(Dataset):
    """Items ``{"image": [3,S,S], "label": int, "mask": [S,S], "foreground": [S,S], "index": int}``.

    ``mask`` is all zeros for normal images (and for anomalies without a mask); ``foreground`` is
    all ones when the sample has none. ``validate_masks`` checks that each mask has the size of its
    image before resizing. ``cache=True`` keeps loaded items in memory (small test sets that attacks
    iterate many times); each DataLoader worker then holds its own cache.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: int,
        validate_masks: bool = True,
        cache: bool = False,
    ) -> None:
        if image_size < 1:
            raise PgauditError(f"image_size={image_size}: must be a positive number of pixels.")
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.validate_masks = validate_masks
        self.cache = cache
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """The labels of all samples, without loading any image."""
        return [s.label for s in self.samples]

    def _load(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        size = self.image_size
        image = load_image(sample.image, size)
        if sample.mask is not None and sample.label == 1:
            if self.validate_masks:
                check_same_size(sample.image, sample.mask)
            mask = load_mask(sample.mask, size)
        else:
            mask = torch.zeros(size, size)
        if sample.foreground is not None:
            if self.validate_masks:
                check_same_size(sample.image, sample.foreground)
            foreground = load_mask(sample.foreground, size)
        else:
            foreground = torch.ones(size, size)
        return {
            "image": image,
            "label": int(sample.label),
            "mask": mask,
            "foreground": foreground,
            "index": index,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self.samples)
        if not 0 <= index < len(self.samples):
            raise IndexError(index)
        if not self.cache:
            return self._load(index)
        item = self._cache.get(index)
        if item is None:
            item = self._cache[index] = self._load(index)
        return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in item.items()}
