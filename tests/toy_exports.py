"""A toy detector and toy data for the export tests (and ``benchmarks/exported.py``): a linear
redness detector, and MVTec-layout categories of grey noise with red squares (exact masks)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


class Redness(nn.Module):
    """Patch logits 50 · mean(R − G) on 4x4 patches of ``size`` px images (``shrink``: computed on
    the image resized to 3/4 and back, the "different resize" of a faulty export)."""

    def __init__(self, size: int, shrink: bool = False) -> None:
        super().__init__()
        self.image_size, self.shrink = size, shrink
        self.weight = nn.Parameter(torch.tensor([50.0, -50.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shrink:
            side = self.image_size
            x = F.interpolate(x, size=(side * 3 // 4,) * 2, mode="bilinear", antialias=True)
            x = F.interpolate(x, size=(side, side), mode="bilinear")
        return F.avg_pool2d((x * self.weight.view(1, 3, 1, 1)).sum(1, keepdim=True), 4)[:, 0]


def write_red_squares(
    root: Path, *, size: int, side: int, n_train: int = 4, n_good: int = 8, n_bad: int = 8,
    grey: tuple[float, float] = (0.35, 0.65), shift: float | None = 0.02,
    colour: tuple[float, float, float] | None = None, seed: int = 0,
) -> Path:  # fmt: skip
    """A category of grey-noise images; each defect a ``side`` px square, its red raised and
    green lowered by ``shift`` (faint: an attack at 8/255 can hide it), or painted ``colour``."""
    rng = np.random.default_rng(seed)
    for folder in ("train/good", "test/good", "test/red", "ground_truth/red"):
        (root / folder).mkdir(parents=True)

    def noise() -> np.ndarray:
        return np.repeat(rng.uniform(*grey, (size, size, 1)), 3, axis=2)

    def save(array: np.ndarray, path: Path) -> None:
        Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)

    for i in range(n_train):
        save(noise(), root / f"train/good/{i:03d}.png")
    for i in range(n_good):
        save(noise(), root / f"test/good/{i:03d}.png")
    for i in range(n_bad):
        image, mask = noise(), np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - side, 2)
        square = image[y : y + side, x : x + side]
        if colour is not None:
            square[:] = colour
        else:
            square[..., 0] += shift
            square[..., 1] -= shift
        mask[y : y + side, x : x + side] = 255
        save(image, root / f"test/red/{i:03d}.png")
        Image.fromarray(mask).save(root / f"ground_truth/red/{i:03d}_mask.png")
    return root


def onnx_export(model: nn.Module, path: Path) -> None:
    """``model`` to ONNX with torch's exporter (dynamic batch, one file, outputs anomaly_map)."""
    side = int(model.image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.rand(2, 3, side, side),), str(path), input_names=["images"],
            output_names=["anomaly_map"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            dynamo=True, verbose=False, external_data=False,
        )  # fmt: skip
