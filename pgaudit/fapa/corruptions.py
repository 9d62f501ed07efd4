"""Corruptions of a pseudo-anomaly patch and the light/medium/heavy levels that combine them.

Every public operation has the signature ``op(patch, rng) -> patch``: ``patch`` is float32 in
[0, 1], channels-first ``[3, h, w]`` or channels-last ``[h, w, 3]`` (an ambiguous ``[3, h, 3]``
is read as channels-first); the result has the same layout and shape (any size, odd ones
included), values in [0, 1]. ``rng`` (``np.random.Generator``) is the only source of randomness.
Inputs are never modified in place.

A level (:data:`LEVELS`) applies a colour jitter of its strength, then 0..``max_ops`` distinct
operations drawn from :data:`CORRUPTIONS`, in random order (:func:`corrupt_patch`). The colour
jitter is an affine colour map, so it is drawn and applied for a whole batch of patches at once
(:func:`jitter_maps`, :func:`apply_colour_maps`); :func:`apply_operations` does the rest.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pgaudit.fapa.perlin import perlin_noise
from pgaudit.fapa.warp import bilinear_sample

CorruptionOp = Callable[[np.ndarray, np.random.Generator], np.ndarray]
# Public op -> its channels-first implementation (no layout checks), used by corrupt_patch.
_CHANNELS_FIRST: dict[Callable[..., np.ndarray], Callable[..., np.ndarray]] = {}

HUE_MAX = 0.5
_GREY = np.array([0.299, 0.587, 0.114])
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_EYE = np.eye(3)
_TO_GREY = np.outer(np.ones(3), _GREY)  # x -> grey(x) in every channel


def _clip(patch: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(patch, 0.0, out=patch), 1.0, out=patch)


def _any_layout(op: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Public form of a channels-first op: accept ``[h, w, 3]`` too, clip, keep float32."""

    @functools.wraps(op)
    def wrapper(patch: np.ndarray, rng: np.random.Generator, **kwargs: float | None) -> np.ndarray:
        patch = np.asarray(patch, dtype=np.float32)
        if patch.ndim != 3 or 3 not in (patch.shape[0], patch.shape[-1]):
            raise ValueError(f"expected a [3, h, w] or [h, w, 3] patch, got shape {patch.shape}")
        channels_last = patch.shape[0] != 3
        work = patch.transpose(2, 0, 1) if channels_last else patch
        out = op(np.ascontiguousarray(work), rng, **kwargs).astype(np.float32)
        out = _clip(out)
        return np.ascontiguousarray(out.transpose(1, 2, 0)) if channels_last else out

    _CHANNELS_FIRST[wrapper] = op
    return wrapper


def _hue_matrices(shifts: np.ndarray) -> np.ndarray:
    """``[B, 3, 3]`` RGB matrices rotating hue by ``shifts`` turns (rotations of the YIQ chroma
    plane)."""
    angle = 2.0 * np.pi * shifts
    rotation = np.zeros((len(shifts), 3, 3))
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1] = rotation[:, 2, 2] = np.cos(angle)
    rotation[:, 2, 1] = np.sin(angle)
    rotation[:, 1, 2] = -rotation[:, 2, 1]
    return _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ


def jitter_maps(
    strengths: np.ndarray,
    means: np.ndarray,
    rng: np.random.Generator,
    hues: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random colour-jitter maps of a batch of patches, as affine colour maps ``x -> M x + t``.

    Patch ``b`` gets brightness, contrast and saturation factors in ``[1 - s_b, 1 + s_b]`` and a
    hue shift in ``[-hue_b, hue_b]`` turns (default ``min(s_b, 0.5)``), applied in a random order.
    Each step is an affine colour map, so their composition is one: contrast blends with the mean
    grey level of the current patch, obtained from ``means`` ``[B, 3]`` (the patch's mean colour).
    Returns ``M`` ``[B, 3, 3]`` and ``t`` ``[B, 3]`` (float64). Vectorised over the batch.
    """
    strengths = np.asarray(strengths, dtype=np.float64)
    batch = len(strengths)
    hues = np.minimum(strengths if hues is None else np.asarray(hues, dtype=np.float64), HUE_MAX)
    low, high = np.maximum(0.0, 1.0 - strengths)[:, None], (1.0 + strengths)[:, None]
    brightness, contrast, saturation = rng.uniform(low, high, size=(batch, 3)).T
    shifts = rng.uniform(-hues, hues)
    order = np.argsort(rng.random((batch, 4)), axis=1)  # a random permutation per patch
    steps = np.stack(
        [
            brightness[:, None, None] * _EYE,
            contrast[:, None, None] * _EYE,
            saturation[:, None, None] * _EYE + (1.0 - saturation)[:, None, None] * _TO_GREY,
            _hue_matrices(shifts),
        ]
    )  # [4, B, 3, 3]
    matrix = np.broadcast_to(_EYE, (batch, 3, 3))
    offset = np.zeros((batch, 3))
    every = np.arange(batch)
    for position in range(4):
        step = order[:, position]
        # Contrast blends with the mean grey level of the patch as mapped so far.
        grey = (np.einsum("bij,bj->bi", matrix, means) + offset) @ _GREY
        blend = np.where(step == 1, (1.0 - contrast) * grey, 0.0)
        chosen = steps[step, every]
        matrix = chosen @ matrix
        offset = np.einsum("bij,bj->bi", chosen, offset) + blend[:, None]
    return matrix, offset


def apply_colour_maps(patches: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``M_b x + t_b`` for every pixel of patch ``b`` of ``[B, 3, ...]``, clipped to [0, 1]."""
    batch = patches.shape[0]
    flat = patches.reshape(batch, 3, -1)
    out = matrix.astype(np.float32) @ flat
    out += offset.astype(np.float32)[:, :, None]
    return _clip(out).reshape(patches.shape)


@_any_layout
def color_jitter(
    patch: np.ndarray, rng: np.random.Generator, strength: float = 0.4, hue: float | None = None
) -> np.ndarray:
    """Brightness, contrast and saturation factors in [1 - strength, 1 + strength] and a hue shift
    in [-hue, hue] turns (default ``min(strength, 0.5)``), in random order (see
    :func:`jitter_maps`: composed into one affine colour map, clipped once at the end)."""
    means = patch.reshape(3, -1).mean(axis=1, dtype=np.float64)[None]
    hues = None if hue is None else np.array([hue])
    matrix, offset = jitter_maps(np.array([strength]), means, rng, hues)
    return apply_colour_maps(patch[None], matrix, offset)[0]


@_any_layout
def gaussian_blur(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma in [0.5, 2.5] px (spatial axes only, reflected edges)."""
    sigma = float(rng.uniform(0.5, 2.5))
    offsets = np.arange(-math.ceil(3.0 * sigma), math.ceil(3.0 * sigma) + 1)
    kernel = np.exp(offsets * offsets * (-0.5 / sigma**2))
    kernel /= kernel.sum()
    rows = ndimage.correlate1d(patch, kernel, axis=1, mode="reflect")
    return ndimage.correlate1d(rows, kernel, axis=2, mode="reflect")


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


@_any_layout
def elastic_deform(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement field (a coarse random grid, bilinearly upsampled) of up to
    4-12 % of the patch side."""
    _, h, w = patch.shape
    cells = int(rng.integers(2, 5))
    amplitude = float(rng.uniform(0.04, 0.12)) * max(h, w)
    coarse = rng.uniform(-amplitude, amplitude, size=(1, 2, cells + 1, cells + 1))
    field = F.interpolate(
        torch.from_numpy(coarse.astype(np.float32)),
        size=(h, w),
        mode="bilinear",
        align_corners=True,
    )[0].numpy()
    yy, xx = _grid(h, w)
    return bilinear_sample(patch, yy + field[0], xx + field[1])


@_any_layout
def swirl(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swirl about a point near the centre: a rotation that decays with the distance to it."""
    _, h, w = patch.shape
    cy = (h - 1) / 2.0 + float(rng.uniform(-0.2, 0.2)) * h
    cx = (w - 1) / 2.0 + float(rng.uniform(-0.2, 0.2)) * w
    radius = float(rng.uniform(0.4, 1.0)) * max(h, w) / math.log(2.0)
    strength = float(rng.uniform(2.0, 6.0)) * (1.0 if rng.random() < 0.5 else -1.0)
    yy, xx = _grid(h, w)
    dy, dx = yy - cy, xx - cx
    rho = np.sqrt(dy * dy + dx * dx)
    theta = np.arctan2(dy, dx) + strength * np.exp(rho * (-1.0 / radius))
    return bilinear_sample(patch, cy + rho * np.sin(theta), cx + rho * np.cos(theta))


def _dct_matrix(n: int = 8) -> np.ndarray:
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


# 2-D DCT of a flattened 8x8 block as one 64x64 matrix; JPEG (ITU T.81 Annex K) quant tables.
_DCT64 = np.kron(_dct_matrix(), _dct_matrix()).astype(np.float32)
_Q_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
     92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float32,
)  # fmt: skip
_Q_CHROMA = np.full(64, 99.0, dtype=np.float32)
_Q_CHROMA[[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 24, 25]] = [
    17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 47, 66
]  # fmt: skip
_Q_TABLES = np.stack([_Q_LUMA, _Q_CHROMA, _Q_CHROMA])[:, None, :]  # Y, Cb, Cr
_LEVEL_SHIFT = np.array([128.0, 0.0, 0.0], dtype=np.float32)[:, None, None]
_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float32,
)
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC).astype(np.float32)


@_any_layout
def jpeg_artifacts(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """JPEG-style compression at quality 5..30: 8x8 block DCT of YCbCr, quantised with the
    standard tables scaled by the quality (blocking and ringing). Vectorised, no codec."""
    quality = int(rng.integers(5, 31))
    scale = (5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality) / 100.0
    steps = np.clip(np.floor(_Q_TABLES * scale + 0.5), 1.0, 255.0)  # [3, 1, 64]
    _, h, w = patch.shape
    ph, pw = -h % 8, -w % 8
    nh, nw = (h + ph) // 8, (w + pw) // 8
    ycc = np.empty((3, nh * 8, nw * 8), dtype=np.float32)  # edge-padded to whole blocks
    ycc[:, :h, :w] = (_RGB_TO_YCC * np.float32(255.0) @ patch.reshape(3, -1)).reshape(3, h, w)
    ycc[:, h:, :w] = ycc[:, h - 1 : h, :w]
    ycc[:, :, w:] = ycc[:, :, w - 1 : w]
    ycc -= _LEVEL_SHIFT
    blocks = ycc.reshape(3, nh, 8, nw, 8).transpose(0, 1, 3, 2, 4).reshape(3, nh * nw, 64)
    coeffs = blocks @ _DCT64.T
    coeffs = np.round(coeffs / steps) * steps
    blocks = (coeffs @ _DCT64).reshape(3, nh, nw, 8, 8).transpose(0, 1, 3, 2, 4)
    ycc = (blocks.reshape(3, nh * 8, nw * 8)[:, :h, :w] + _LEVEL_SHIFT) * np.float32(1.0 / 255.0)
    return _clip((_YCC_TO_RGB @ ycc.reshape(3, -1)).reshape(3, h, w))


@_any_layout
def torn_lines(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1..4 bands of rows (or columns) shifted sideways with wrap-around, like a torn scan."""
    vertical = bool(rng.random() < 0.5)
    work = patch.transpose(0, 2, 1) if vertical else patch
    _, h, w = work.shape
    bands = int(rng.integers(1, 5))
    # Per band: start row, height 1..h/6, sideways offset 1..w/3 with a random sign.
    starts, heights, offsets, signs = rng.random((4, bands))
    starts = (starts * h).astype(np.intp)
    ends = starts + 1 + (heights * max(1, h // 6)).astype(np.intp)
    offsets = (1 + (offsets * max(1, w // 3)).astype(np.intp)) * np.where(signs < 0.5, -1, 1)
    rows = np.arange(h)[:, None]
    in_band = (rows >= starts) & (rows < ends)  # [h, bands]; later bands win where they overlap
    last = bands - 1 - np.argmax(in_band[:, ::-1], axis=1)
    shift = np.where(in_band.any(axis=1), offsets[last], 0)
    index = rows * w + (np.arange(w)[None, :] + shift[:, None]) % w
    out = np.take(work.reshape(3, -1), index, axis=1)
    return out.transpose(0, 2, 1) if vertical else out


@_any_layout
def perlin_fill(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the region where Perlin noise exceeds a random threshold with a random, noise-textured
    colour (opacity 0.6..1)."""
    _, h, w = patch.shape
    res = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    noise = perlin_noise((h, w), res, rng)
    region = noise > float(rng.uniform(-0.2, 0.3))
    if not region.any():
        region = noise >= noise.max()
    colour = rng.random(3).astype(np.float32)[:, None, None]
    alpha = np.float32(rng.uniform(0.6, 1.0))
    fill = (1.0 - alpha) * patch + alpha * (colour + np.float32(0.2) * noise)
    return _clip(np.where(region, fill, patch))


@_any_layout
def random_erasing(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace a random rectangle (5..40 % of the area, aspect 0.3..3.3) by noise or a colour."""
    _, h, w = patch.shape
    area = float(rng.uniform(0.05, 0.4)) * h * w
    aspect = math.exp(float(rng.uniform(math.log(0.3), math.log(3.3))))
    eh = int(np.clip(round(math.sqrt(area * aspect)), 1, h))
    ew = int(np.clip(round(math.sqrt(area / aspect)), 1, w))
    y = int(rng.integers(0, h - eh + 1))
    x = int(rng.integers(0, w - ew + 1))
    out = patch.copy()
    if rng.random() < 0.5:
        out[:, y : y + eh, x : x + ew] = rng.random((3, eh, ew), dtype=np.float32)
    else:
        out[:, y : y + eh, x : x + ew] = rng.random((3, 1, 1), dtype=np.float32)
    return out


CORRUPTIONS: dict[str, CorruptionOp] = {
    "gaussian_blur": gaussian_blur,
    "elastic": elastic_deform,
    "swirl": swirl,
    "jpeg": jpeg_artifacts,
    "torn_lines": torn_lines,
    "perlin_fill": perlin_fill,
    "random_erasing": random_erasing,
}


@dataclass(frozen=True)
class CorruptionLevel:
    """A corruption strength: colour-jitter strength range and the most operations applied."""

    name: str
    jitter: tuple[float, float]
    max_ops: int


LEVELS: tuple[CorruptionLevel, ...] = (
    CorruptionLevel("light", (0.1, 0.1), 1),
    CorruptionLevel("medium", (0.4, 0.4), 2),
    CorruptionLevel("heavy", (0.8, 1.0), 4),
)


def apply_operations(
    patch: np.ndarray,
    level: CorruptionLevel,
    rng: np.random.Generator,
    operations: Sequence[str] = tuple(CORRUPTIONS),
) -> np.ndarray:
    """0..``level.max_ops`` distinct ``operations``, in random order, on a channels-first patch
    (the part of a level after its colour jitter). Returns ``patch`` itself when none is drawn."""
    count = min(int(rng.integers(0, level.max_ops + 1)), len(operations))
    for index in rng.permutation(len(operations))[:count].tolist():
        patch = _CHANNELS_FIRST[CORRUPTIONS[operations[index]]](patch, rng)
    return patch


def corrupt_patch(
    patch: np.ndarray,
    level: CorruptionLevel,
    rng: np.random.Generator,
    operations: Sequence[str] = tuple(CORRUPTIONS),
) -> np.ndarray:
    """Colour jitter of ``level``'s strength, then 0..``level.max_ops`` distinct ``operations``.

    ``patch``: channels-first ``[3, h, w]`` float32 in [0, 1]; returns a new array of that shape.
    """
    strength = float(rng.uniform(*level.jitter))
    out = _CHANNELS_FIRST[color_jitter](patch, rng, strength=strength)
    return apply_operations(out, level, rng, operations)
