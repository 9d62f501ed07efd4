"""MVTec-layout categories cut from real photographs that ship with scikit-image.

The synthetic categories (:mod:`pgaudit.data.synth`) stopped predicting how hardening behaves on
real photographs, so the robustness benchmark also runs on categories made from
``skimage.data`` photographs, in two fixed splits:

- :data:`TUNING` (``immunohistochemistry``, ``moon``, ``cell``): where recipes are tuned;
- :data:`REPORT` (``coins``, ``hubble_deep_field``, ``coffee``): where they are reported.

No other photograph is used: the rest are kept out of the project on purpose, for an independent
check. Each photograph is cut into a checkerboard of cells; training crops come from the "white"
cells and test crops from the "black" ones, so no test pixel was ever seen in training. A crop
covers 85-100 % of a cell's shorter side, is resized to ``size`` px (Lanczos) and gets light
jitter (gain, contrast, sensor noise). Grey photographs are replicated to three channels.

Defects are drawn by means unlike FAPA's (which pastes rotated, colour-jittered patches of the
image itself): a thin curved **scratch** of lighter or darker material, a soft-edged brownish
**stain**, a **hole** (dark, or light on dark photographs), and a **foreign** blob of procedural stripes. Each
defect has an exact mask (the pixels whose blend weight is at least one half) and a strength
``DEFECT_STRENGTH``; the generator and that strength were frozen before any recipe was tuned.
scikit-image is an optional dependency (``pip install scikit-image``, in the ``dev`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pgaudit.data.images import save_mask
from pgaudit.errors import PgauditError

TUNING = ("immunohistochemistry", "moon", "cell")
REPORT = ("coins", "hubble_deep_field", "coffee")
PHOTOGRAPHS = TUNING + REPORT
DEFECT_TYPES = ("scratch", "stain", "hole", "foreign")
#: Opacity/contrast of every defect (0..1), frozen before tuning: the strongest, since even then
#: the clean-trained tiny preset (its recipe before any tuning, seed 0) reaches clean image AUROC
#: only 0.834 / 0.820 / 0.770 on coins / hubble_deep_field / coffee (0.781 / 0.804 / 0.727 at
#: 0.5): the photographs' own variety, not the defects' faintness, limits it
#: (``benchmarks/real_photos.py --split report --modes clean --seeds 0 --strengths 0.5,0.7,1``).
DEFECT_STRENGTH = 1.0
_CELL = 170  # target cell side in source pixels

Array = np.ndarray


def load_photograph(name: str) -> Array:
    """``skimage.data.<name>()`` as float32 RGB ``[H, W, 3]`` in [0, 1]."""
    if name not in PHOTOGRAPHS:
        raise PgauditError(
            f"photograph {name!r}: not one of the benchmark photographs; use "
            f"{', '.join(PHOTOGRAPHS)}."
        )
    try:
        import skimage.data
    except ImportError:
        raise PgauditError(
            "the real-photograph categories need scikit-image: pip install scikit-image."
        ) from None
    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return (pixels[..., :3].astype(np.float32) / 255.0).clip(0, 1)


def cells(height: int, width: int) -> list[tuple[int, int, int, int, bool]]:
    """The checkerboard ``(top, left, cell_h, cell_w, is_train)`` cells of a photograph."""
    rows, cols = max(2, height // _CELL), max(2, width // _CELL)
    ch, cw = height // rows, width // cols
    return [(r * ch, c * cw, ch, cw, (r + c) % 2 == 0) for r in range(rows) for c in range(cols)]


def crop(photo: Array, rng: np.random.Generator, size: int, train: bool) -> Array:
    """One jittered ``[size, size, 3]`` crop from the photograph's train or test cells."""
    pool = [c for c in cells(*photo.shape[:2]) if c[4] == train]
    top, left, ch, cw, _ = pool[rng.integers(len(pool))]
    side = int(round(min(ch, cw) * rng.uniform(0.85, 1.0)))
    y = top + int(rng.integers(0, ch - side + 1))
    x = left + int(rng.integers(0, cw - side + 1))
    patch = Image.fromarray(np.round(photo[y : y + side, x : x + side] * 255).astype(np.uint8))
    image = np.asarray(patch.resize((size, size), Image.LANCZOS), dtype=np.float32) / 255.0
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.95, 1.05) + mean * rng.uniform(0.95, 1.05)
    return np.clip(image + rng.normal(0, 0.006, image.shape), 0, 1).astype(np.float32)


def _grid(size: int) -> tuple[Array, Array]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xx, yy


def _blob_alpha(rng: np.random.Generator, size: int, radius: float, soft: float) -> Array:
    """An irregular blob's blend weight in [0, 1] (wobbly radius, edge width ``soft`` px)."""
    xx, yy = _grid(size)
    margin = radius + 2
    cx, cy = rng.uniform(margin, size - margin, 2)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = np.ones_like(angle)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.04, 0.12) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    dist = np.hypot(xx - cx, yy - cy) / wobble
    return np.clip((radius - dist) / soft + 0.5, 0, 1)


def _scratch(rng: np.random.Generator, image: Array, strength: float) -> tuple[Array, Array]:
    size = image.shape[0]
    xx, yy = _grid(size)
    p0, p2 = rng.uniform(0.15, 0.85, (2, 2)) * size
    while np.hypot(*(p2 - p0)) < 0.3 * size:
        p2 = rng.uniform(0.15, 0.85, 2) * size
    p1 = (p0 + p2) / 2 + rng.normal(0, 0.12 * size, 2)
    t = np.linspace(0, 1, 200)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    dist = np.full((size, size), np.inf, np.float32)
    for px, py in curve:
        dist = np.minimum(dist, np.hypot(xx - px, yy - py))
    half = rng.uniform(1.2, 2.2) * size / 128
    alpha = np.clip(half + 0.5 - dist, 0, 1)
    tone = 1.0 if rng.random() < 0.5 else 0.0  # lighter or darker material
    return alpha * strength * 1.6, np.full(3, tone, np.float32)


def _stain(rng: np.random.Generator, image: Array, strength: float) -> tuple[Array, Array]:
    size = image.shape[0]
    alpha = _blob_alpha(rng, size, rng.uniform(12, 22) * size / 128, soft=3 * size / 128)
    tint = np.array([0.45, 0.30, 0.15], np.float32) * rng.uniform(0.8, 1.2)
    return alpha * strength, tint


def _hole(rng: np.random.Generator, image: Array, strength: float) -> tuple[Array, Array]:
    size = image.shape[0]
    radius = rng.uniform(8, 14) * size / 128
    alpha = _blob_alpha(rng, size, radius, soft=1.5 * size / 128)
    tone = 0.03 if image.mean() > 0.35 else 0.85  # what shows through: dark, or a light backing
    return alpha * min(1.0, strength * 1.6), np.full(3, tone, np.float32)


def _foreign(rng: np.random.Generator, image: Array, strength: float) -> tuple[Array, Array]:
    size = image.shape[0]
    xx, yy = _grid(size)
    alpha = _blob_alpha(rng, size, rng.uniform(12, 22) * size / 128, soft=2 * size / 128)
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 6) * size / 128
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    texture = stripes[..., None] * colour
    return alpha * strength, texture


def make_photo_defect(
    rng: np.random.Generator, image: Array, defect: str, strength: float = DEFECT_STRENGTH
) -> tuple[Array, Array]:
    """Draw defect ``defect`` on ``image`` ``[S,S,3]``; returns the new image and its exact mask.

    The mask holds the pixels whose blend weight is at least half the defect's peak weight.
    """
    makers = {"scratch": _scratch, "stain": _stain, "hole": _hole, "foreign": _foreign}
    if defect not in makers:
        raise PgauditError(f"defect {defect!r}: use one of {', '.join(DEFECT_TYPES)}.")
    if not 0 < strength <= 1:
        raise PgauditError(f"defect strength {strength}: use a number in (0, 1].")
    alpha, paint = makers[defect](rng, image, strength)
    alpha = np.clip(alpha, 0, 1).astype(np.float32)
    if defect == "stain":  # a brownish discolouration; the others cover
        target = image * 0.4 + paint
    else:
        target = np.broadcast_to(paint, image.shape)
    new = image * (1 - alpha[..., None]) + target * alpha[..., None]
    mask = alpha >= 0.5 * alpha.max()
    return np.clip(new, 0, 1).astype(np.float32), mask


def _rng(seed: int, photo: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 7919, photo, split, index]))


def _save_image(path: Path, image: Array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path, compress_level=1)


def write_photo_category(
    root: Path,
    name: str,
    *,
    size: int = 128,
    seed: int = 0,
    n_train: int = 60,
    n_test: int = 60,
    strength: float = DEFECT_STRENGTH,
) -> Path:
    """Write one MVTec-layout category cut from photograph ``name`` under ``root``.

    ``n_test - n_test // 2`` normal and ``n_test // 2`` defective test images (round-robin over
    :data:`DEFECT_TYPES`). Image ``k`` of a split depends only on (seed, photograph, split, k).
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise PgauditError(f"{root}: already exists and is not empty; delete it or pick another.")
    photo = load_photograph(name)
    pid = PHOTOGRAPHS.index(name)
    for k in range(n_train):
        _save_image(
            root / "train" / "good" / f"{k:03d}.png", crop(photo, _rng(seed, pid, 0, k), size, True)
        )
    for k in range(n_test - n_test // 2):
        _save_image(
            root / "test" / "good" / f"{k:03d}.png", crop(photo, _rng(seed, pid, 1, k), size, False)
        )
    counters = dict.fromkeys(DEFECT_TYPES, 0)
    for k in range(n_test // 2):
        defect = DEFECT_TYPES[k % len(DEFECT_TYPES)]
        rng = _rng(seed, pid, 2, k)
        image, mask = make_photo_defect(rng, crop(photo, rng, size, False), defect, strength)
        stem = f"{counters[defect]:03d}"
        counters[defect] += 1
        _save_image(root / "test" / defect / f"{stem}.png", image)
        save_mask(root / "ground_truth" / defect / f"{stem}_mask.png", mask)
    return root


def make_photo_dataset(
    out: Path, names: Sequence[str] = PHOTOGRAPHS, **kwargs: object
) -> list[Path]:
    """Write one category per photograph in ``names`` under ``out``; returns their folders."""
    return [write_photo_category(Path(out) / n, n, **kwargs) for n in names]  # type: ignore[arg-type]
