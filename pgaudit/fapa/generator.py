"""Foreground-aware pseudo-anomalies (FAPA): cut, corrupt, rotate and paste a patch per image.

For each image a rectangle is cut from the (dilated) foreground, corrupted at a random level
(:data:`pgaudit.fapa.corruptions.LEVELS`), rotated by an angle in [-90, 90] degrees with transparent
corners, and pasted so that its rotated bounding box also lies inside the dilated foreground. The
pseudo-anomaly mask is the set of pasted pixels; every one of them differs from the original image
(at least ``min_change`` in some channel), and no pixel outside it changes.

Only the small patches are processed, never whole images. The placement and the corruption
operations run per image; the colour jitter, the rotation and the paste run once for the whole
batch (the rotated patches form one ragged array of pixels). All randomness comes from the
``np.random.Generator`` passed in.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from pgaudit.data.grid import mask_to_grid
from pgaudit.fapa.corruptions import (
    CORRUPTIONS,
    LEVELS,
    CorruptionLevel,
    apply_colour_maps,
    apply_operations,
    corrupt_patch,
    jitter_maps,
)
from pgaudit.fapa.placement import Region, foreground_regions
from pgaudit.fapa.warp import RotatedPatches, rotate_patches, rotated_extent

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class FapaConfig:
    """Settings of the generator. Pixel sizes are at ``reference_size`` and scale with the image.

    ``min_side``/``max_side``: bounds of the cut rectangle's sides (small-defect categories: a
    smaller ``max_side``, e.g. 39). ``dilate``: foreground dilation radius. ``level_probs``:
    probabilities of the light/medium/heavy levels. ``max_angle``: rotation in
    [-max_angle, max_angle] degrees. ``operations``: names from ``CORRUPTIONS`` to draw from.
    ``min_change``: every pasted pixel differs from the original by at least this in some channel.
    ``min_mean_change``: a paste whose mean change is below this is re-corrupted once, heavily.
    """

    min_side: int = 14
    max_side: int = 86
    reference_size: int = 224
    dilate: int = 8
    level_probs: tuple[float, float, float] = (0.2, 0.2, 0.6)
    max_angle: float = 90.0
    operations: tuple[str, ...] = field(default_factory=lambda: tuple(CORRUPTIONS))
    min_change: float = 4.0 / 255.0
    min_mean_change: float = 0.04

    def __post_init__(self) -> None:
        if not 1 <= self.min_side <= self.max_side:
            raise ValueError(
                f"need 1 <= min_side <= max_side, got {self.min_side}, {self.max_side}"
            )
        if self.reference_size < 1 or self.dilate < 0:
            raise ValueError("reference_size must be >= 1 and dilate >= 0")
        probs = np.asarray(self.level_probs, dtype=float)
        if probs.shape != (len(LEVELS),) or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"level_probs must be {len(LEVELS)} non-negative weights")
        unknown = sorted(set(self.operations) - set(CORRUPTIONS))
        if unknown:
            raise ValueError(f"unknown corruption operations {unknown}; known: {list(CORRUPTIONS)}")
        if not 0.0 <= self.min_change <= 0.5:
            raise ValueError("min_change must be in [0, 0.5]")

    def side_range(self, size: int) -> tuple[int, int]:
        """``(min, max)`` patch side in pixels for images of side ``size``."""
        scale = size / self.reference_size
        low = min(size, max(2, round(self.min_side * scale)))
        high = min(size, max(low, round(self.max_side * scale)))
        return low, high

    def dilate_radius(self, size: int) -> int:
        """Foreground dilation radius in pixels for images of side ``size``."""
        return round(self.dilate * size / self.reference_size)


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float32).numpy()
    return np.asarray(array, dtype=np.float32)


def _foreground(
    foreground: np.ndarray | torch.Tensor | None, batch: int, height: int, width: int
) -> np.ndarray | None:
    """The foreground masks as a boolean ``[B, H, W]`` array (``None`` stays ``None``)."""
    if foreground is None:
        return None
    if isinstance(foreground, torch.Tensor):
        foreground = foreground.detach().cpu().numpy()
    fg = np.asarray(foreground)
    fg = fg if fg.dtype == bool else fg > 0.5
    if fg.ndim == 4 and fg.shape[1] == 1:
        fg = fg[:, 0]
    if fg.shape != (batch, height, width):
        raise ValueError(f"foreground must be [{batch}, {height}, {width}], got {list(fg.shape)}")
    return fg


def _place(
    region: Region, h: int, w: int, angle: float, low: int, rng: np.random.Generator
) -> tuple[tuple[int, int], tuple[int, int], int, int, float]:
    """Source and destination corners inside ``region`` for an ``h`` x ``w`` patch rotated by
    ``angle``. Until both rectangles fit: shrink the patch to ``low``, then drop the rotation,
    then fall back to the whole image with the original patch. Returns ``(src, dst, h, w, angle)``.
    """
    drawn = (h, w, angle)
    while True:
        src = region.sample(h, w, rng)
        dst = region.sample(*rotated_extent(h, w, angle), rng) if src is not None else None
        if dst is not None:
            return src, dst, h, w, angle
        if h > low or w > low:
            h, w = max(low, int(h * 0.75)), max(low, int(w * 0.75))
        elif angle != 0.0:
            angle = 0.0
        elif not region.is_whole_image:
            region = Region(region.height, region.width)
            h, w, angle = drawn
        else:  # unreachable while low <= image side; guards against an endless loop
            h, w = min(h, region.height), min(w, region.width)


@dataclass
class _Plan:
    """What to paste in one image: level, patch size, rotation, source and destination corners."""

    level: CorruptionLevel
    h: int
    w: int
    angle: float
    source: tuple[int, int]
    destination: tuple[int, int]


def _plan(
    region: Region,
    rng: np.random.Generator,
    config: FapaConfig,
    sides: tuple[int, int],
    cumulative: list[float],
) -> _Plan:
    """Draw the level (``cumulative``: cumulative level probabilities), size (``sides``: bounds)
    and rotation of one image's patch and place it in ``region``."""
    low, high = sides
    level = LEVELS[min(bisect.bisect_right(cumulative, rng.random()), len(LEVELS) - 1)]
    h, w = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
    angle = float(rng.uniform(-config.max_angle, config.max_angle))
    source, destination, h, w, angle = _place(region, h, w, angle, low, rng)
    return _Plan(level, h, w, angle, source, destination)


def _crop(image: np.ndarray, plan: _Plan) -> np.ndarray:
    (y, x), h, w = plan.source, plan.h, plan.w
    return image[:, y : y + h, x : x + w]


def _corrupt_batch(
    images: np.ndarray, plans: list[_Plan], rng: np.random.Generator, config: FapaConfig
) -> np.ndarray:
    """The corrupted patches, zero-padded into ``[B, 3, max h, max w]``: colour jitter for the
    whole batch at once, then each patch's operations."""
    height, width = max(p.h for p in plans), max(p.w for p in plans)
    patches = np.zeros((len(plans), 3, height, width), dtype=np.float32)
    for index, plan in enumerate(plans):
        patches[index, :, : plan.h, : plan.w] = _crop(images[index], plan)
    areas = np.array([p.h * p.w for p in plans], dtype=np.float64)
    means = patches.sum(axis=(2, 3), dtype=np.float64) / areas[:, None]
    strengths = np.array([rng.uniform(*p.level.jitter) for p in plans])
    patches = apply_colour_maps(patches, *jitter_maps(strengths, means, rng))
    for index, plan in enumerate(plans):
        view = patches[index, :, : plan.h, : plan.w]
        patch = np.ascontiguousarray(view)
        corrupted = apply_operations(patch, plan.level, rng, config.operations)
        if corrupted is not patch:
            view[...] = corrupted
    return patches


def _paste_batch(
    out: np.ndarray,
    masks: np.ndarray,
    plans: list[_Plan],
    rotated: RotatedPatches,
    rng: np.random.Generator,
    config: FapaConfig,
) -> None:
    """Paste the rotated patches into ``out`` ``[B, 3, H, W]`` and mark them in ``masks``, such
    that every pasted pixel differs from the original by at least ``config.min_change``."""
    values, inside, starts = rotated.values, rotated.inside, rotated.starts
    targets = [
        out[index, :, y : y + box_h, x : x + box_w]  # views: writing them edits ``out``
        for index, ((y, x), (box_h, box_w)) in enumerate(
            zip((p.destination for p in plans), rotated.extents, strict=True)
        )
    ]
    original = np.empty_like(values)
    for index, target in enumerate(targets):
        original[:, starts[index] : starts[index + 1]].reshape(target.shape)[...] = target

    def change(span: slice) -> np.ndarray:
        """Largest absolute difference over the channels, per pixel."""
        diff = np.abs(values[:, span] - original[:, span])
        return np.maximum(np.maximum(diff[0], diff[1]), diff[2])

    changes = change(slice(None))
    # A paste that hardly differs from what it covers is corrupted again, heavily (rare).
    covered = np.maximum(np.add.reduceat(inside, starts[:-1], dtype=np.float64), 1.0)
    mean_change = np.add.reduceat(np.where(inside, changes, 0.0), starts[:-1]) / covered
    for index in np.flatnonzero(mean_change < config.min_mean_change).tolist():
        plan = plans[index]
        patch = corrupt_patch(_crop(out[index], plan), LEVELS[-1], rng, config.operations)
        span = slice(starts[index], starts[index + 1])
        values[:, span] = rotate_patches(patch[None], [(plan.h, plan.w)], [plan.angle]).values
        changes[span] = change(span)
    weak = inside & (changes < config.min_change)
    if weak.any():  # push near-identical pixels away from the original: mask == changed pixels
        below = original[:, weak]
        values[:, weak] = np.where(
            below < 0.5, below + config.min_change, below - config.min_change
        )
    for index, (target, plan) in enumerate(zip(targets, plans, strict=True)):
        patch, covered_box = rotated.box(index)
        np.copyto(target, patch, where=covered_box)
        (y, x), (box_h, box_w) = plan.destination, covered_box.shape
        masks[index, y : y + box_h, x : x + box_w] = covered_box


def make_pseudo_anomalies(
    images: ArrayT,
    foreground: np.ndarray | torch.Tensor | None,
    rng: np.random.Generator,
    config: FapaConfig = FapaConfig(),
) -> tuple[ArrayT, ArrayT]:
    """One foreground-aware pseudo-anomaly per image.

    ``images``: ``[B, 3, H, W]`` float in [0, 1] (torch tensor or numpy array); ``foreground``:
    ``[B, H, W]`` in {0, 1} (``None`` or all ones: the whole image). Returns ``(images, masks)`` of
    the input's type (torch: its dtype and device): images clipped to [0, 1], masks ``[B, H, W]``
    in {0, 1}, never empty. Deterministic given ``rng``'s state.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed))")
    source = _as_numpy(images)
    if source.ndim != 4 or source.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {list(source.shape)}")
    batch, _, height, width = source.shape
    fg = _foreground(foreground, batch, height, width)
    size = min(height, width)
    sides = config.side_range(size)
    if fg is None:
        regions = [Region(height, width) for _ in range(batch)]
    else:
        regions = foreground_regions(fg, config.dilate_radius(size), min_area=sides[0] ** 2)

    out = np.clip(source, 0.0, 1.0)  # one pass: the copy is memory-bound
    masks = np.zeros((batch, height, width), dtype=np.float32)
    if batch:
        cumulative = (np.cumsum(config.level_probs) / sum(config.level_probs)).tolist()
        plans = [_plan(region, rng, config, sides, cumulative) for region in regions]
        patches = _corrupt_batch(out, plans, rng, config)
        rotated = rotate_patches(patches, [(p.h, p.w) for p in plans], [p.angle for p in plans])
        _paste_batch(out, masks, plans, rotated, rng, config)

    if isinstance(images, torch.Tensor):
        return (
            torch.from_numpy(out).to(images.device, images.dtype),
            torch.from_numpy(masks).to(images.device),
        )
    return out.astype(images.dtype if images.dtype.kind == "f" else np.float32, copy=False), masks


def patch_labels(masks: ArrayT, patch_size: int) -> ArrayT:
    """Patch labels ``[B, H // p, W // p]``: a patch is anomalous (1) if any of its pixels is.

    When ``H`` or ``W`` is not a multiple of ``patch_size`` the cells tile the whole mask as in
    :func:`pgaudit.data.grid.mask_to_grid` (adaptive max pooling). Same type as ``masks``
    (numpy: float32).
    """
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    tensor = masks if isinstance(masks, torch.Tensor) else torch.from_numpy(_as_numpy(masks))
    if tensor.ndim != 3:
        raise ValueError(f"masks must be [B, H, W], got {list(tensor.shape)}")
    grid = (max(1, tensor.shape[1] // patch_size), max(1, tensor.shape[2] // patch_size))
    labels = mask_to_grid(tensor, grid)
    return labels if isinstance(masks, torch.Tensor) else labels.numpy().astype(np.float32)
