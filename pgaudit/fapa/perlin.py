"""Vectorised Perlin (gradient) noise in numpy.

Random unit gradients ``(gx, gy)`` sit on a lattice of ``res`` cells per axis. A pixel at
fractional position ``(fy, fx)`` in its cell takes the dot products with its four corner gradients
and blends them with the quintic fade weights ``u = fade(fx)``, ``v = fade(fy)``:

    noise = sum over corners (a, b) of wy_a * wx_b * (gx_ab * (fx - b) + gy_ab * (fy - a))

with ``wy = (1 - v, v)`` and ``wx = (1 - u, u)``. The sum separates into matrix products with
per-axis interpolation matrices: ``noise = Py @ GX @ Qx.T + Qy @ GY @ Px.T``, where ``P`` holds
the fade weights and ``Q`` the fade weights times the offsets, each ``[pixels, cells + 1]`` with two
non-zeros per row. So the field costs four small matrix products, for any output size, with no
per-pixel Python loops.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# 2-D Perlin noise with unit gradients lies in [-sqrt(2)/2, sqrt(2)/2]; scale to [-1, 1].
_NORM = float(np.sqrt(2.0))


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


@lru_cache(maxsize=512)
def _axis_weights(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """``(P, Q)`` ``[n, cells + 1]``: fade weights of the two lattice points around each of ``n``
    samples spread over ``cells`` cells, and those weights times the offsets to the points."""
    pos = (np.arange(n, dtype=np.float64) + 0.5) * (cells / n)
    idx = np.minimum(pos.astype(np.intp), cells - 1)
    frac = pos - idx
    fade = _fade(frac)
    rows = np.arange(n)
    p = np.zeros((n, cells + 1))
    q = np.zeros((n, cells + 1))
    p[rows, idx], p[rows, idx + 1] = 1.0 - fade, fade
    q[rows, idx], q[rows, idx + 1] = (1.0 - fade) * frac, fade * (frac - 1.0)
    p, q = p.astype(np.float32), q.astype(np.float32)
    p.flags.writeable = q.flags.writeable = False  # shared by the cache
    return p, q


def perlin_noise(
    shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Perlin noise of ``shape`` (h, w) with ``res`` (cells_y, cells_x) lattice cells, in [-1, 1].

    Returns float32. ``res`` entries are clamped to ``[1, side]``.
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = min(max(1, int(res[0])), h), min(max(1, int(res[1])), w)
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(ry + 1, rx + 1))
    gx = np.cos(angles).astype(np.float32)
    gy = np.sin(angles).astype(np.float32)
    py, qy = _axis_weights(h, ry)
    px, qx = _axis_weights(w, rx)
    noise = py @ gx @ qx.T
    noise += qy @ gy @ px.T
    noise *= np.float32(_NORM)
    return noise


def fractal_noise(
    shape: tuple[int, int],
    res: tuple[int, int],
    rng: np.random.Generator,
    octaves: int = 3,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of ``octaves`` Perlin layers, each with twice the lattice resolution and ``persistence``
    times the amplitude of the previous one; normalised to [-1, 1] (float32)."""
    total = np.zeros((int(shape[0]), int(shape[1])), dtype=np.float32)
    amplitude, weight = 1.0, 0.0
    for octave in range(max(1, int(octaves))):
        scale = 2**octave
        layer = perlin_noise(shape, (res[0] * scale, res[1] * scale), rng)
        total += np.float32(amplitude) * layer
        weight += amplitude
        amplitude *= persistence
    return total / np.float32(weight)
