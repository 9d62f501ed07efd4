"""Geometric resampling of small channels-first patches: bilinear sampling and rotation.

Coordinates are computed with NumPy broadcasting; the bilinear gather runs in
``torch.nn.functional.grid_sample`` (one C call, no per-pixel Python loops). Rotation works on a
whole batch of differently sized patches at once: the pixels of all rotated boxes form one ragged
list of points (:class:`RotatedPatches`), sampled from the patches stacked into one image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _scale(n: int) -> float:
    """Pixel coordinate -> grid_sample coordinate factor (align_corners=True) for ``n`` pixels."""
    return 2.0 / (n - 1) if n > 1 else 0.0


def sample_grid(patch: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``patch`` ``[c, h, w]`` at ``grid`` ``[1, H, W, 2]`` (x, y in [-1, 1],
    -1/+1 at the first/last pixel centres; outside values clamp to the border): ``[c, H, W]``."""
    source = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None]
    out = F.grid_sample(
        source, torch.from_numpy(grid), mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0].numpy()


def bilinear_sample(patch: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``patch`` ``[c, h, w]`` at pixel coordinates ``ys``, ``xs`` (broadcast to ``[H, W]``).

    Coordinates outside the patch are clamped to its border. Returns ``[c, H, W]`` float32.
    """
    _, h, w = patch.shape
    shape = np.broadcast_shapes(np.shape(ys), np.shape(xs))
    grid = np.empty((1, *shape, 2), dtype=np.float32)
    grid[0, ..., 0] = xs * np.float32(_scale(w)) - 1.0
    grid[0, ..., 1] = ys * np.float32(_scale(h)) - 1.0
    return sample_grid(patch, grid)


def rotated_extent(h: int, w: int, angle_deg: float) -> tuple[int, int]:
    """Height and width of the axis-aligned box that holds an ``h`` x ``w`` patch rotated by
    ``angle_deg``."""
    theta = math.radians(angle_deg)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    height = max(1, math.ceil(h * c + w * s - 1e-6))
    width = max(1, math.ceil(h * s + w * c - 1e-6))
    return height, width


@dataclass
class RotatedPatches:
    """Rotated patches as one ragged list of the ``N`` pixels of their boxes, box after box (each
    box row-major).

    ``values`` ``[3, N]``: colours; ``inside`` ``[N]``: covered by the rotated patch (the other
    pixels of a box are transparent); ``extents``: box ``(H, W)`` per patch; ``starts`` ``[B + 1]``:
    where each box's pixels begin (and the total).
    """

    values: np.ndarray
    inside: np.ndarray
    extents: list[tuple[int, int]]
    starts: np.ndarray

    def box(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``index`` as views ``(values [3, H, W], inside [H, W])``."""
        (height, width), start = self.extents[index], self.starts[index]
        stop = self.starts[index + 1]
        values = self.values[:, start:stop].reshape(-1, height, width)
        return values, self.inside[start:stop].reshape(height, width)


def rotate_patches(
    patches: np.ndarray, sizes: Sequence[tuple[int, int]], angles: Sequence[float]
) -> RotatedPatches:
    """Rotate patch ``b`` (``patches[b, :, :h_b, :w_b]`` of ``[B, C, P, Q]``, sizes
    ``(h_b, w_b)``) by ``angles[b]`` degrees about its centre (positive: clockwise on screen, y
    pointing down), into its :func:`rotated_extent` box.

    The sampling coordinates of each box are two broadcast operations; all boxes are then sampled
    by one ``grid_sample`` call from the patches stacked into one ``[C, B * P, Q]`` image.
    """
    batch, channels, height, width = patches.shape
    extents = [rotated_extent(h, w, a) for (h, w), a in zip(sizes, angles, strict=True)]
    starts = np.zeros(batch + 1, dtype=np.intp)
    np.cumsum([eh * ew for eh, ew in extents], out=starts[1:])
    grid = np.empty((1, 1, int(starts[-1]), 2), dtype=np.float32)
    inside = np.empty(int(starts[-1]), dtype=bool)
    f32 = np.float32
    kx, ky = f32(_scale(width)), f32(_scale(batch * height))
    for index, ((h, w), (box_h, box_w), angle) in enumerate(
        zip(sizes, extents, angles, strict=True)
    ):
        theta = math.radians(angle)
        cos, sin = f32(math.cos(theta)), f32(math.sin(theta))
        oy = np.arange(box_h, dtype=f32)[:, None] - f32((box_h - 1) / 2.0)
        ox = np.arange(box_w, dtype=f32)[None, :] - f32((box_w - 1) / 2.0)
        # Inverse rotation: offset from the box centre -> offset from the patch centre.
        ux = cos * ox + sin * oy
        uy = cos * oy - sin * ox
        span = slice(starts[index], starts[index + 1])
        covered = inside[span].reshape(box_h, box_w)
        np.less_equal(np.abs(ux), f32(w / 2.0), out=covered)
        covered &= np.abs(uy) <= f32(h / 2.0)
        # Grid coordinates of the source pixels, clamped to the patch's own pixels (not the
        # padding around it); patch ``index`` starts at row ``index * height`` of the stack.
        cell = grid[0, 0, span].reshape(box_h, box_w, 2)
        gx, gy = cell[..., 0], cell[..., 1]
        np.multiply(ux, kx, out=gx)
        gx += f32((w - 1) / 2.0 * kx - 1.0)
        np.clip(gx, f32(-1.0), f32((w - 1) * kx - 1.0), out=gx)
        np.multiply(uy, ky, out=gy)
        top = index * height * ky - 1.0
        gy += f32((h - 1) / 2.0 * ky + top)
        np.clip(gy, f32(top), f32((h - 1) * ky + top), out=gy)
    stacked = np.ascontiguousarray(patches.transpose(1, 0, 2, 3), dtype=np.float32)
    values = F.grid_sample(
        torch.from_numpy(stacked.reshape(1, channels, batch * height, width)),
        torch.from_numpy(grid),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )[0, :, 0].numpy()
    return RotatedPatches(values, inside, extents, starts)


def rotate_patch(patch: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``patch`` ``[c, h, w]`` by ``angle_deg`` about its centre (positive: clockwise on
    screen, y pointing down).

    Returns ``(rotated [c, H, W], inside [H, W] bool)`` where ``H, W`` is :func:`rotated_extent`
    and ``inside`` marks the pixels covered by the rotated patch; the others are transparent (their
    values are meaningless and must not be pasted).
    """
    _, h, w = patch.shape
    return rotate_patches(patch[None], [(h, w)], [angle_deg]).box(0)
