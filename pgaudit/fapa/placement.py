"""Where pseudo-anomaly rectangles may go: inside the dilated foreground of each image.

The foreground is dilated by a square structuring element (separable sliding-window OR); a
:class:`Region` then draws a uniformly random top-left corner such that an ``h`` x ``w`` rectangle
lies fully inside the allowed pixels: a few random candidates first (cheap when the object is
large), then an exhaustive scan (separable sliding-window AND). Sliding windows are computed by
window doubling: O(log window) whole-array operations, no per-pixel Python loops.
"""

from __future__ import annotations

import numpy as np

_TRIES = 16


def _window(mask: np.ndarray, size: int, axis: int, op: np.ufunc) -> np.ndarray:
    """``out[i] = op.reduce(mask[i : i + size])`` along ``axis``, which shrinks to
    ``n - size + 1`` entries."""
    out = np.moveaxis(mask, axis, 0)
    span = 1
    while span < size:
        step = min(span, size - span)
        out = op(out[:-step], out[step:])
        span += step
    return np.moveaxis(out, 0, axis)


def dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """Dilate boolean masks ``[B, H, W]`` with a ``(2 radius + 1)``-square structuring element
    (pixels outside the image count as background)."""
    out = masks.astype(bool)
    if radius <= 0:
        return out
    batch, height, width = out.shape
    padded = np.zeros((batch, height + 2 * radius, width), dtype=bool)
    padded[:, radius : radius + height] = out
    out = _window(padded, 2 * radius + 1, 1, np.logical_or)
    padded = np.zeros((batch, height, width + 2 * radius), dtype=bool)
    padded[:, :, radius : radius + width] = out
    return np.ascontiguousarray(_window(padded, 2 * radius + 1, 2, np.logical_or))


def fitting_corners(allowed: np.ndarray, h: int, w: int) -> np.ndarray:
    """Boolean map ``[H - h + 1, W - w + 1]`` of the top-left corners at which an ``h`` x ``w``
    rectangle lies inside ``allowed`` ``[H, W]`` (empty when it is larger than the mask)."""
    if h > allowed.shape[0] or w > allowed.shape[1]:
        return np.zeros((0, 0), dtype=bool)
    return _window(_window(allowed, h, 0, np.logical_and), w, 1, np.logical_and)


class Region:
    """Where rectangles may go in one ``height`` x ``width`` image: everywhere (``allowed=None``)
    or inside the boolean mask ``allowed``, which covers the box of its shape whose top-left
    corner is ``offset`` (pixels outside that box are not allowed)."""

    def __init__(
        self,
        height: int,
        width: int,
        allowed: np.ndarray | None = None,
        offset: tuple[int, int] = (0, 0),
    ) -> None:
        self.height, self.width = height, width
        self._allowed = allowed
        if allowed is None:
            self.bbox = (0, height, 0, width)
        else:
            y0, x0 = offset
            self.bbox = (y0, y0 + allowed.shape[0], x0, x0 + allowed.shape[1])

    @property
    def is_whole_image(self) -> bool:
        return self._allowed is None

    def sample(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int] | None:
        """Uniformly random top-left ``(y, x)`` of an allowed ``h`` x ``w`` rectangle, or None."""
        y0, y1, x0, x1 = self.bbox
        ny, nx = y1 - y0 - h + 1, x1 - x0 - w + 1
        if h < 1 or w < 1 or ny < 1 or nx < 1:
            return None
        if self._allowed is None:
            return int(rng.integers(ny)), int(rng.integers(nx))
        allowed = self._allowed
        # The first hit among i.i.d. uniform candidates is uniform over the allowed corners.
        # (Scaled uniform floats: much cheaper than Generator.integers with a size.)
        ys = (rng.random(_TRIES) * ny).astype(np.intp).tolist()
        xs = (rng.random(_TRIES) * nx).astype(np.intp).tolist()
        for y, x in zip(ys, xs, strict=True):
            if allowed[y : y + h, x : x + w].all():
                return y0 + y, x0 + x
        hits = np.flatnonzero(fitting_corners(allowed, h, w))
        if not hits.size:
            return None
        index = int(hits[rng.integers(hits.size)])
        return y0 + index // nx, x0 + index % nx


def foreground_regions(foreground: np.ndarray, radius: int, min_area: int) -> list[Region]:
    """One :class:`Region` per image of ``foreground`` ``[B, H, W]`` (bool): the foreground
    dilated by ``radius``; the whole image where the foreground is full or has fewer than
    ``min_area`` pixels (empty or tiny masks)."""
    batch, height, width = foreground.shape
    regions = [Region(height, width) for _ in range(batch)]
    partial = [
        index
        for index in range(batch)
        if max(1, min_area) <= np.count_nonzero(foreground[index]) < height * width
    ]
    if not partial:
        return regions
    masks = foreground[partial]
    rows_any, cols_any = masks.any(axis=2), masks.any(axis=1)

    def span(flags: np.ndarray, n: int) -> tuple[int, int]:
        """The dilated extent ``[start, stop)`` of the True entries of ``flags``."""
        hits = np.flatnonzero(flags)
        return max(0, int(hits[0]) - radius), min(n, int(hits[-1]) + 1 + radius)

    # Dilate only the box that holds every dilated mask of the batch (nothing lies outside it).
    y0, y1 = span(rows_any.any(axis=0), height)
    x0, x1 = span(cols_any.any(axis=0), width)
    grown = dilate(masks[:, y0:y1, x0:x1], radius)
    for row, index in enumerate(partial):
        (a, b), (c, d) = span(rows_any[row], height), span(cols_any[row], width)
        regions[index] = Region(height, width, grown[row, a - y0 : b - y0, c - x0 : d - x0], (a, c))
    return regions
