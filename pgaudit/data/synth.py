"""A small synthetic MVTec-layout dataset: the built-in data for the demo, the tests and the README.

Two categories, each with four defect types (scratch, stain, hole, crack) and exact 0/255
ground-truth masks (a mask pixel is set exactly where the defect changed the image):

- ``widget``: a textured blue chip (rounded square with grooves, a metal boss and four screw holes)
  on a plain light background, with pose (+-17 degrees, +-5 % shift), size, colour and lighting
  variation; its true foreground masks are written to ``train/foreground_mask/``.
- ``fabric``: a plain-weave texture with random phase, slight rotation, per-thread irregularity,
  fibre noise and lighting variation.

Defects (at 128 px: scratches 4-5 px wide and 45-60 px long, cracks 4-5 px wide, stains and holes
8-12 px in radius) use colours that occur in the images (lighter or darker material, background
showing through, a brownish tint), so finding them needs local structure, not a colour outlier
test. Sizes scale with the image side.
Every image is drawn from its own ``numpy`` Generator seeded by ``(seed, category, split, index)``:
the same seed gives the same files, and image ``k`` does not depend on how many images are made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pgaudit.checks import check_out_folder, check_seed
from pgaudit.data.images import save_mask
from pgaudit.errors import ParameterError, PgauditError

CATEGORIES = ("widget", "fabric")
DEFECT_TYPES = ("scratch", "stain", "hole", "crack")

Array = np.ndarray


def _grid(size: int) -> tuple[Array, Array]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xx, yy


def _lighting(rng: np.random.Generator, xx: Array, yy: Array, size: int, amp: float) -> Array:
    """A multiplicative linear lighting ramp in a random direction, ``1 +- amp``."""
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)) / (size / 2)
    return (1.0 + amp * ramp / np.sqrt(2)) * rng.uniform(0.93, 1.07)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> Array:
    """Unit-variance Gaussian-filtered noise ``[size, size]``."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma)
    return noise / (noise.std() + 1e-8)


def _render_widget(rng: np.random.Generator, size: int) -> tuple[Array, Array, Array]:
    """One widget image ``[S,S,3]``, its foreground mask ``[S,S]`` and the bare background."""
    xx, yy = _grid(size)
    light = _lighting(rng, xx, yy, size, rng.uniform(0.03, 0.09))[..., None]
    bg_colour = np.array([0.80, 0.80, 0.77]) + rng.uniform(-0.015, 0.015, 3)
    background = bg_colour * light

    cx, cy = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
    theta = rng.uniform(-0.3, 0.3)  # radians
    a = size * rng.uniform(0.26, 0.29)
    b = a * rng.uniform(0.9, 1.0)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    r = ((np.abs(u) / a) ** 4 + (np.abs(v) / b) ** 4) ** 0.25
    foreground = r <= 1.0

    body = (np.array([0.18, 0.40, 0.66]) + rng.uniform(-0.03, 0.03, 3)) * rng.uniform(0.94, 1.06)
    grooves = 1.0 + 0.08 * np.cos(2 * np.pi * v / (size / 14) + rng.uniform(0, 2 * np.pi))
    rim = np.clip((r - 0.8) / 0.2, 0.0, 1.0)
    lit = rng.uniform(0, 2 * np.pi)
    bevel = 1.0 + 0.35 * rim * (u * np.cos(lit) + v * np.sin(lit)) / a
    speckle = 1.0 + 0.03 * _smooth_noise(rng, size, 1.5)
    obj = body * (grooves * bevel * speckle)[..., None]

    rb = np.hypot(u, v) / (0.34 * a)
    metal = (np.array([0.78, 0.68, 0.42]) + rng.uniform(-0.03, 0.03, 3)) * rng.uniform(0.95, 1.05)
    boss = metal * (1.05 - 0.25 * rb**2)[..., None]
    obj = np.where((rb <= 1.0)[..., None], boss, obj)
    ring = (rb > 0.78) & (rb <= 0.9)
    obj = np.where(ring[..., None], obj * 0.55, obj)

    for su in (-1, 1):
        for sv in (-1, 1):
            d = np.hypot(u - su * 0.62 * a, v - sv * 0.62 * b)
            obj = np.where((d <= 0.08 * a)[..., None], np.array([0.12, 0.12, 0.14]), obj)

    image = np.where(foreground[..., None], obj * light, background)
    image = image + rng.normal(0, 0.008, image.shape)
    return np.clip(image, 0, 1).astype(np.float32), foreground, background.astype(np.float32)


def _render_fabric(rng: np.random.Generator, size: int) -> tuple[Array, Array, Array]:
    """One plain-weave texture ``[S,S,3]``; foreground is all ones, 'background' the dark backing."""
    xx, yy = _grid(size)
    theta = np.deg2rad(rng.uniform(-4, 4))
    period = size / rng.uniform(13.0, 15.0)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 2)
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period + rng.uniform(0, 2)
    cu, cv = np.floor(u), np.floor(v)
    su, sv = u - cu - 0.5, v - cv - 0.5
    warp_on_top = ((cu + cv) % 2) == 0

    n_threads = 64
    warp_var = rng.normal(0, 0.06, n_threads)[(cu.astype(int)) % n_threads]
    weft_var = rng.normal(0, 0.06, n_threads)[(cv.astype(int)) % n_threads]
    warp = (0.62 + 0.38 * (1 - (2 * su) ** 2)) * (0.82 + 0.18 * np.cos(np.pi * sv)) + warp_var
    weft = (0.62 + 0.38 * (1 - (2 * sv) ** 2)) * (0.82 + 0.18 * np.cos(np.pi * su)) + weft_var

    base = (np.array([0.42, 0.55, 0.38]) + rng.uniform(-0.05, 0.05, 3)) * rng.uniform(0.9, 1.1)
    warp_colour = base
    weft_colour = np.clip(base * 1.2 + 0.04, 0, 1)
    texture = np.where(
        warp_on_top[..., None], warp_colour * warp[..., None], weft_colour * weft[..., None]
    )
    fibre = 1.0 + 0.04 * _smooth_noise(rng, size, 0.8)
    light = _lighting(rng, xx, yy, size, rng.uniform(0.03, 0.08))
    image = texture * (fibre * light)[..., None] + rng.normal(0, 0.008, (size, size, 3))
    backing = np.broadcast_to(base * 0.22, (size, size, 3)) * light[..., None]
    foreground = np.ones((size, size), dtype=bool)
    return np.clip(image, 0, 1).astype(np.float32), foreground, backing.astype(np.float32)


def _pick_point(rng: np.random.Generator, region: Array, margin: float) -> tuple[float, float]:
    """A random ``(x, y)`` inside ``region`` at least ``margin`` px from its edge (and the image's)."""
    padded = np.pad(region, 1, constant_values=False)
    inside = ndimage.distance_transform_edt(padded)[1:-1, 1:-1] >= margin
    ys, xs = np.nonzero(inside)
    if len(xs) == 0:  # tiny images: fall back to the region itself
        ys, xs = np.nonzero(region)
    k = rng.integers(len(xs))
    return float(xs[k]) + 0.5, float(ys[k]) + 0.5


def _polyline_distance(points: Array, xx: Array, yy: Array) -> Array:
    """Distance of every pixel centre to the polyline through ``points`` ``[K, 2]``."""
    p0, p1 = points[:-1, None, None, :], points[1:, None, None, :]
    d = p1 - p0
    pix = np.stack([xx, yy], axis=-1)[None]
    t = np.clip(((pix - p0) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-6), 0.0, 1.0)
    closest = p0 + t[..., None] * d
    return np.sqrt(((pix - closest) ** 2).sum(-1)).min(axis=0)


def _blob(rng: np.random.Generator, centre: tuple[float, float], radius: float, xx, yy) -> Array:
    """An irregular disc: radius modulated by a few random harmonics of the angle."""
    dx, dy = xx - centre[0], yy - centre[1]
    phi = np.arctan2(dy, dx)
    wobble = sum(
        rng.uniform(0.05, 0.15) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    return np.hypot(dx, dy) <= radius * (1.0 + wobble)


def _scratch(rng, image, region, backing, size) -> tuple[Array, Array]:
    """A thin, slightly curved bright line (worn material)."""
    xx, yy = _grid(size)
    length = size * rng.uniform(0.34, 0.48)
    x0, y0 = _pick_point(rng, region, size * 0.12)
    angle = rng.uniform(0, np.pi)
    t = np.linspace(-0.5, 0.5, 9)[:, None]
    bend = rng.uniform(-0.12, 0.12) * length * (1 - 4 * t**2)
    pts = np.hstack([x0 + t * length * np.cos(angle), y0 + t * length * np.sin(angle)])
    pts += bend * np.array([[-np.sin(angle), np.cos(angle)]])
    width = max(1.2, size * rng.uniform(0.016, 0.021))
    mask = (_polyline_distance(pts, xx, yy) <= width) & region
    new = image * 0.2 + 0.78 * np.array([0.96, 0.96, 0.93])
    return np.where(mask[..., None], new, image), mask


def _crack(rng, image, region, backing, size) -> tuple[Array, Array]:
    """A dark jagged random-walk line, sometimes with a short branch."""
    xx, yy = _grid(size)
    x, y = _pick_point(rng, region, size * 0.14)
    angle = rng.uniform(0, 2 * np.pi)
    step = size * 0.026
    pts = [(x, y)]
    for _ in range(16):
        angle += rng.uniform(-0.45, 0.45)
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
        pts.append((x, y))
    dist = _polyline_distance(np.array(pts), xx, yy)
    if rng.random() < 0.6:
        k = int(rng.integers(3, 11))
        bx, by = pts[k]
        branch_angle = angle + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
        bpts = [
            (bx + i * step * np.cos(branch_angle), by + i * step * np.sin(branch_angle))
            for i in range(6)
        ]
        dist = np.minimum(dist, _polyline_distance(np.array(bpts), xx, yy))
    width = max(1.1, size * rng.uniform(0.014, 0.018))
    mask = (dist <= width) & region
    return np.where(mask[..., None], image * 0.22, image), mask


def _stain(rng, image, region, backing, size) -> tuple[Array, Array]:
    """An irregular brownish tinted blob, strongest in the middle."""
    xx, yy = _grid(size)
    radius = size * rng.uniform(0.06, 0.095)
    centre = _pick_point(rng, region, radius * 1.2)
    mask = _blob(rng, centre, radius, xx, yy) & region
    falloff = np.clip(1 - np.hypot(xx - centre[0], yy - centre[1]) / (radius * 1.4), 0, 1)
    alpha = (0.45 + 0.35 * falloff)[..., None]
    tint = np.array([0.45, 0.30, 0.12]) * rng.uniform(0.8, 1.2)
    new = image * (1 - alpha) + tint * alpha * (0.6 + 0.6 * image.mean(-1, keepdims=True))
    return np.where(mask[..., None], new, image), mask


def _hole(rng, image, region, backing, size) -> tuple[Array, Array]:
    """A hole through the material: the background (widget) or dark backing (fabric) shows,
    with a dark broken edge and the material's shadow falling on one side."""
    xx, yy = _grid(size)
    radius = size * rng.uniform(0.07, 0.1)
    centre = _pick_point(rng, region, radius * 1.5)
    mask = _blob(rng, centre, radius, xx, yy) & region
    edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, round(size / 64)))
    angle, offset = rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.25, 0.4)
    lit = ndimage.shift(mask, (offset * np.sin(angle), offset * np.cos(angle)), order=0)
    new = np.where((mask & ~lit)[..., None], backing * 0.45, backing)
    new = np.where(edge[..., None], image * 0.3, new)
    return np.where(mask[..., None], new, image), mask


DEFECTS: dict[str, Callable[..., tuple[Array, Array]]] = {
    "scratch": _scratch,
    "stain": _stain,
    "hole": _hole,
    "crack": _crack,
}
RENDERERS = {"widget": _render_widget, "fabric": _render_fabric}


def _rng(seed: int, category: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, category, split, index]))


def _save_image(path: Path, image: Array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, compress_level=1)


def make_defect(
    rng: np.random.Generator, image: Array, foreground: Array, backing: Array, defect: str
) -> tuple[Array, Array]:
    """Apply defect ``defect`` inside ``foreground``; returns the new image and its exact mask."""
    size = image.shape[0]
    min_area = max(6, size * size // 2000)
    for _ in range(20):
        new, mask = DEFECTS[defect](rng, image, foreground, backing, size)
        if mask.sum() >= min_area:
            break
    new = np.clip(new + rng.normal(0, 0.004, new.shape) * mask[..., None], 0, 1)
    return new.astype(np.float32), mask


def _write_category(
    root: Path, name: str, cat_id: int, size: int, seed: int, n_train: int, n_test: int
) -> None:
    render = RENDERERS[name]
    for k in range(n_train):
        image, foreground, _ = render(_rng(seed, cat_id, 0, k), size)
        _save_image(root / "train" / "good" / f"{k:03d}.png", image)
        if name == "widget":
            save_mask(root / "train" / "foreground_mask" / f"{k:03d}.png", foreground)
    n_good = n_test - n_test // 2
    for k in range(n_good):
        image, _, _ = render(_rng(seed, cat_id, 1, k), size)
        _save_image(root / "test" / "good" / f"{k:03d}.png", image)
    counters = dict.fromkeys(DEFECT_TYPES, 0)
    for k in range(n_test // 2):
        defect = DEFECT_TYPES[k % len(DEFECT_TYPES)]
        rng = _rng(seed, cat_id, 2, k)
        image, foreground, backing = render(rng, size)
        image, mask = make_defect(rng, image, foreground, backing, defect)
        stem = f"{counters[defect]:03d}"
        counters[defect] += 1
        _save_image(root / "test" / defect / f"{stem}.png", image)
        save_mask(root / "ground_truth" / defect / f"{stem}_mask.png", mask)


def make_synthetic_dataset(
    out: Path,
    size: int = 128,
    seed: int = 0,
    n_train: int = 80,
    n_test: int = 40,
    categories: Sequence[str] = CATEGORIES,
) -> list[Path]:
    """Write the synthetic MVTec-layout categories under ``out``; returns the category folders.

    The test split has ``n_test - n_test // 2`` normal images and ``n_test // 2`` defective ones,
    spread round-robin over the four defect types.
    """
    out = Path(out).expanduser()
    if size < 32:
        raise ParameterError(f"size {size}: too small for visible defects; use 32 or more.", "size")
    if n_train < 1:
        raise ParameterError(f"n_train {n_train}: need at least one training image.", "n_train")
    if n_test < 2:
        raise ParameterError(
            f"n_test {n_test}: need at least 2 test images (normal + defective).", "n_test"
        )
    unknown = [c for c in categories if c not in RENDERERS]
    if unknown:
        raise PgauditError(
            f"category {unknown[0]!r}: not a synthetic category; use {', '.join(CATEGORIES)}."
        )
    check_seed(seed)
    check_out_folder(out, None)
    folders = []
    for name in categories:
        root = out / name
        if root.exists() and any(root.iterdir()):
            raise PgauditError(
                f"{root}: already exists and is not empty; delete it or pick another OUT."
            )
        folders.append(root)
    for name, root in zip(categories, folders, strict=True):
        _write_category(root, name, CATEGORIES.index(name), size, seed, n_train, n_test)
    return folders
