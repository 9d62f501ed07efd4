"""Small PNGs for the report: clean/adversarial image, amplified perturbation, masks and maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Anchors of a perceptually ordered dark-to-bright colormap (black, purple, red, orange, yellow).
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [87, 16, 110],
        [188, 55, 84],
        [249, 142, 9],
        [252, 255, 164],
    ],
    dtype=np.float32,
)
#: Longest side of a gallery image, in pixels.
MAX_SIDE = 224


def colorize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map a 2-D array to RGB uint8 with a fixed colormap on the range [lo, hi]."""
    span = hi - lo if hi > lo else 1.0
    t = np.clip((values.astype(np.float32) - lo) / span, 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(t.astype(np.int64), len(_ANCHORS) - 2)
    frac = (t - i)[..., None]
    rgb = _ANCHORS[i] * (1 - frac) + _ANCHORS[i + 1] * frac
    return rgb.round().astype(np.uint8)


def to_uint8_image(chw: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    return (np.clip(chw.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def amplified_perturbation(delta: np.ndarray, eps: float) -> np.ndarray:
    """``[3, H, W]`` perturbation scaled so that -eps..eps spans black..white (``[H, W, 3]``)."""
    return to_uint8_image(np.clip(delta / (2 * eps) + 0.5, 0, 1))


def _save(array: np.ndarray, path: Path) -> None:
    img = Image.fromarray(array)
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    img.save(path, format="PNG", optimize=True)


def write_gallery_item(
    out_dir: Path,
    key: int,
    *,
    name: str,
    label: int,
    clean: np.ndarray,
    adversarial: np.ndarray,
    eps: float,
    mask: np.ndarray,
    clean_map: np.ndarray,
    adversarial_map: np.ndarray,
    attack_id: str,
    clean_score: float,
    adversarial_score: float,
) -> dict[str, Any]:
    """Write the six PNGs of one test image under ``out_dir/gallery/``; return its results entry.

    Both maps share one colour scale (min..max over the two), so the change is visible.
    """
    folder = out_dir / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    lo = float(min(clean_map.min(), adversarial_map.min()))
    hi = float(max(clean_map.max(), adversarial_map.max()))
    arrays = {
        "clean": to_uint8_image(clean),
        "adversarial": to_uint8_image(adversarial),
        "perturbation": amplified_perturbation(adversarial - clean, eps),
        "ground_truth": ((mask >= 0.5) * 255).astype(np.uint8),
        "clean_map": colorize(clean_map, lo, hi),
        "adversarial_map": colorize(adversarial_map, lo, hi),
    }
    entry: dict[str, Any] = {"name": name, "label": int(label)}
    for kind, array in arrays.items():
        rel = f"gallery/{key}_{kind}.png"
        _save(array, out_dir / rel)
        entry[kind] = rel
    entry.update(
        attack_id=attack_id,
        clean_score=float(clean_score),
        adversarial_score=float(adversarial_score),
        map_range=[lo, hi],
    )
    return entry
