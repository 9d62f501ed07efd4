"""Foreground-mask estimation for training images (object pixels = 1), written as 0/255 PNGs.

Methods:

- ``border``: per image, a background model fitted to the image's border ring (a colour plus a
  linear lighting ramp per channel, refitted without outliers so an object touching the border
  does not spoil it); foreground = colour distance to that model above an Otsu threshold (and
  above 4x the border noise), then opening, closing, hole filling and the largest component(s).
  For objects on a plain background.
- ``background``: the same, but the background model is the per-pixel median of the training set
  (aligned to each image by a per-channel gain and offset fitted on the border ring). For a fixed
  camera over a consistent but textured background, where the object's position varies.
- ``full``: every pixel is foreground (textures).
- ``auto``: ``border`` when the border ring is plain and clearly separated from the object in most
  sampled images; otherwise ``background`` when the border ring is the same across images (a
  consistent background); otherwise ``full``. The report says what was chosen and why.

Masks are estimated at a working resolution of at most 256 px and resized back to each image's
size. They are written to ``<category>/train/foreground_mask/<image name>`` (``<stem>.png`` for
non-PNG images), where the layout readers find them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pgaudit.data.images import image_array, save_mask
from pgaudit.data.records import Category, Sample
from pgaudit.errors import ParameterError, PgauditError

METHODS = ("auto", "background", "border", "full")
WORK_SIDE = 256
AUTO_SAMPLE = 12
PLAIN_CONTRAST = 6.0  # (object distance - background distance) / border noise


@dataclass
class ForegroundReport:
    """What :func:`estimate_foreground_masks` did."""

    category: str
    requested: str
    method: str
    reason: str
    written: list[Path] = field(default_factory=list)
    mean_coverage: float = 0.0  # mean share of foreground pixels
    folder: Path | None = None  # where the masks went

    def describe(self) -> str:
        """One line: the method (and why, for auto), what was written where, the coverage."""
        chosen = f"{self.method} (auto: {self.reason})" if self.requested == "auto" else self.method
        return (
            f"{self.category}: method {chosen}; wrote {len(self.written)} masks to "
            f"{self.folder} (mean foreground {self.mean_coverage:.0%})"
        )


def _work_image(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as float ``[h, w, 3]`` at the working resolution, and its native ``(w, h)``."""
    arr = image_array(path)
    native = (arr.shape[1], arr.shape[0])
    scale = WORK_SIDE / max(native)
    if scale < 1:
        small = (max(1, round(native[0] * scale)), max(1, round(native[1] * scale)))
        pixels = Image.fromarray(np.round(arr * 255).astype(np.uint8))
        arr = np.asarray(pixels.resize(small, Image.Resampling.BOX), dtype=np.float32) / 255
    return arr, native


def _ring(h: int, w: int) -> np.ndarray:
    k = max(2, round(0.03 * max(h, w)))
    ring = np.ones((h, w), dtype=bool)
    ring[k:-k, k:-k] = False
    return ring


def _design(ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.stack([np.ones_like(xs, dtype=np.float64), xs / w - 0.5, ys / h - 0.5], axis=1)


def border_model(arr: np.ndarray) -> tuple[np.ndarray, float]:
    """Background fitted to the border ring: ``([h, w, 3] estimate, robust residual noise)``."""
    h, w = arr.shape[:2]
    ys, xs = np.nonzero(_ring(h, w))
    a, vals = _design(ys, xs, h, w), arr[ys, xs].astype(np.float64)
    keep = np.ones(len(vals), dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], vals[keep], rcond=None)
        res = np.linalg.norm(vals - a @ coef, axis=1)
        keep = res <= max(3 * 1.4826 * np.median(res[keep]), 0.02)
    noise = float(1.4826 * np.median(res[keep])) + 1e-3
    gy, gx = np.mgrid[0:h, 0:w]
    full = (_design(gy.ravel(), gx.ravel(), h, w) @ coef).reshape(h, w, 3)
    return full.astype(np.float32), noise


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def clean_mask(mask: np.ndarray, keep_share: float = 0.1) -> np.ndarray:
    """Opening, closing, hole filling and the components of at least ``keep_share`` x the largest."""
    r = max(1, round(max(mask.shape) / 128))
    mask = ndimage.binary_opening(mask, iterations=r)
    mask = np.pad(mask, 2 * r)
    mask = ndimage.binary_closing(mask, iterations=r)[2 * r : -2 * r, 2 * r : -2 * r]
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.nonzero(sizes >= keep_share * sizes.max())[0] + 1
        mask = np.isin(labels, keep)
    return mask


def segment(distance: np.ndarray, noise: float) -> np.ndarray:
    """Foreground from a distance-to-background map (see the module docstring)."""
    threshold = max(_otsu(distance), 4 * noise)
    return clean_mask(distance > threshold)


def _distance(arr: np.ndarray, background: np.ndarray) -> np.ndarray:
    return np.linalg.norm(arr - background, axis=2)


def _aligned_median(arr: np.ndarray, median: np.ndarray) -> tuple[np.ndarray, float]:
    """The set median mapped onto ``arr`` by a per-channel gain and offset fitted on the ring."""
    h, w = arr.shape[:2]
    ring = _ring(h, w)
    out = np.empty_like(median)
    residuals = []
    for c in range(3):
        x, y = median[..., c][ring], arr[..., c][ring]
        gain, offset = np.polyfit(x, y, 1) if np.ptp(x) > 1e-6 else (1.0, float(np.mean(y - x)))
        out[..., c] = gain * median[..., c] + offset
        residuals.append(y - out[..., c][ring])
    noise = float(1.4826 * np.median(np.linalg.norm(np.stack(residuals, 1), axis=1))) + 1e-3
    return out, noise


def _choose(arrays: list[np.ndarray]) -> tuple[str, str]:
    """The ``auto`` decision on a sample of working-resolution images: ``(method, reason)``."""
    contrasts = []
    for arr in arrays:
        bg, noise = border_model(arr)
        d = _distance(arr, bg)
        m = d > max(_otsu(d), 4 * noise)
        share = m.mean()
        plain = 0.01 < share < 0.95
        contrasts.append((np.median(d[m]) - np.median(d[~m])) / noise if plain else 0.0)
    contrast = float(np.median(contrasts))
    if contrast >= PLAIN_CONTRAST:
        return "border", f"plain background (object/background contrast {contrast:.0f}x the noise)"
    shapes = {a.shape for a in arrays}
    if len(arrays) >= 3 and len(shapes) == 1:
        stack = np.stack(arrays)
        ring = _ring(*stack.shape[1:3])
        across = np.median(np.abs(stack - np.median(stack, axis=0))[:, ring])
        within = np.median(
            np.abs(stack[:, ring] - np.median(stack[:, ring], axis=1, keepdims=True))
        )
        if across < 0.3 * within and across < 0.05:
            return "background", "textured but consistent background across the training images"
    return "full", f"no plain or consistent background (contrast {contrast:.1f}x): texture"


def _target(category: Category, sample: Sample) -> Path:
    name = (
        sample.image.name if sample.image.suffix.lower() == ".png" else sample.image.stem + ".png"
    )
    return category.foreground_dir / name


def _resize_mask(mask: np.ndarray, native: tuple[int, int]) -> np.ndarray:
    if (mask.shape[1], mask.shape[0]) == native:
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize(native, Image.Resampling.BILINEAR)
    return np.asarray(img) >= 128


def refuse_existing(category: Category) -> None:
    """Raise PgauditError when any foreground mask that would be written already exists."""
    existing = [t for s in category.train if (t := _target(category, s)).exists()]
    if existing:
        raise ParameterError(
            f"{category.foreground_dir}: {len(existing)} foreground mask(s) already exist; "
            "pass overwrite to replace them.",
            "overwrite",
        )


def estimate_foreground_masks(
    category: Category, method: str = "auto", overwrite: bool = False
) -> ForegroundReport:
    """Estimate and write foreground masks for the training images of ``category``."""
    if method not in METHODS:
        raise ParameterError(
            f"method {method}: unknown method; use one of {', '.join(METHODS)}.", "method"
        )
    if not category.train:
        raise PgauditError(f"{category.root}: no training images; nothing to mask.")
    if not overwrite:
        refuse_existing(category)
    targets = [_target(category, s) for s in category.train]
    images = [_work_image(s.image) for s in category.train]
    requested = method
    reason = "requested"
    if method == "auto":
        step = max(1, len(images) // AUTO_SAMPLE)
        method, reason = _choose([arr for arr, _ in images[::step][:AUTO_SAMPLE]])
    median = None
    if method == "background":
        shapes = {arr.shape for arr, _ in images}
        if len(shapes) != 1:
            raise ParameterError(
                f"{category.root}: method background needs training images of one size; "
                "use border instead.",
                "method",
            )
        median = np.median(np.stack([arr for arr, _ in images]), axis=0)
    coverage = []
    for (arr, native), target in zip(images, targets, strict=True):
        if method == "full":
            mask = np.ones(arr.shape[:2], dtype=bool)
        else:
            if median is not None:
                bg, noise = _aligned_median(arr, median)
            else:
                bg, noise = border_model(arr)
            mask = segment(_distance(arr, bg), noise)
        coverage.append(float(mask.mean()))
        save_mask(target, _resize_mask(mask, native))
    return ForegroundReport(
        category.name, requested, method, reason, targets, float(np.mean(coverage)),
        category.foreground_dir,
    )  # fmt: skip


def estimate_dataset_masks(
    path: Path, category: str | None = None, method: str = "auto", overwrite: bool = False
) -> Iterator[ForegroundReport]:
    """:func:`estimate_foreground_masks` on every category at ``path`` (or only ``category``),
    one report each as it is written; without ``overwrite`` existing masks in any of them are
    refused before anything is written."""
    from pgaudit.data.layouts import open_categories

    if method not in METHODS:
        raise ParameterError(
            f"method {method}: unknown method; use one of {', '.join(METHODS)}.", "method"
        )
    categories = open_categories(path, category)
    if not overwrite:
        for cat in categories:
            refuse_existing(cat)
    for cat in categories:
        yield estimate_foreground_masks(cat, method=method, overwrite=overwrite)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
