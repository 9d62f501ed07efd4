"""Robust image and mask loading: any common mode in, ``[3,S,S]`` / ``[S,S]`` float tensors out.

Images and masks are resized to ``S x S`` with Lanczos resampling (aspect ratio is not kept, as in
the reference evaluation). Grayscale is replicated to three channels, palette images are expanded,
transparent images are composited onto black, 16-bit and float images are scaled to [0, 1].
A mask pixel counts as anomalous when any of its colour channels is non-zero; masks are made
binary (0/255) before resizing, and a resized pixel counts when it is non-zero after resizing
(so thin defects survive downscaling).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pgaudit.errors import PgauditError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def is_image_file(path: Path) -> bool:
    """True for a regular, non-hidden file whose suffix is a supported image format."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``; any failure becomes a PgauditError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PgauditError(f"{path}: file not found; check the path or restore the file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette-with-transparency notices
            img = Image.open(path)
            img.load()
    except _READ_ERRORS as exc:
        raise PgauditError(
            f"{path}: cannot read the image ({type(exc).__name__}); "
            "replace the corrupt file or remove it from the dataset."
        ) from None
    return img


def image_size_of(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header only (cheap); PgauditError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise PgauditError(f"{path}: file not found; check the path or restore the file.")
    try:
        with Image.open(path) as img:
            return img.size
    except _READ_ERRORS as exc:
        raise PgauditError(
            f"{path}: cannot read the image header ({type(exc).__name__}); "
            "replace the corrupt file or remove it from the dataset."
        ) from None


def verify_image(path: Path) -> tuple[int, int]:
    """Check ``path``'s file structure (PIL ``verify``: catches truncated and corrupt files)
    without decoding the pixels; returns its ``(width, height)``."""
    size = image_size_of(path)
    try:
        with Image.open(path) as img:
            img.verify()
    except _READ_ERRORS as exc:
        raise PgauditError(
            f"{path}: the image file is corrupt ({type(exc).__name__}); "
            "replace the file or remove it from the dataset."
        ) from None
    return size


def _is_high_depth(img: Image.Image) -> bool:
    return img.mode in ("I", "F") or img.mode.startswith("I;16")


def _high_depth_array(img: Image.Image) -> np.ndarray:
    """A 16-bit/32-bit/float single-channel image as float32 in [0, 1]."""
    arr = np.asarray(img).astype(np.float32)
    peak = float(arr.max()) if arr.size else 0.0
    if img.mode == "F" and peak <= 1.0:
        scale = 1.0
    elif peak <= 255.0 and img.mode == "F":
        scale = 255.0
    else:
        scale = 65535.0 if peak <= 65535.0 else peak
    return np.clip(arr / scale, 0.0, 1.0)


def _to_rgb8(img: Image.Image) -> Image.Image:
    """Any 8-bit mode as RGB; alpha is composited onto black."""
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def image_array(path: Path) -> np.ndarray:
    """The image at ``path`` at its native size: ``[H, W, 3]`` float32 in [0, 1]."""
    img = _open(path)
    if _is_high_depth(img):
        gray = _high_depth_array(img)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(_to_rgb8(img), dtype=np.float32) / 255.0


def load_image(path: Path, size: int) -> torch.Tensor:
    """Load an image as a ``[3, size, size]`` float32 tensor in [0, 1] (Lanczos resize)."""
    import torch

    img = _open(path)
    if _is_high_depth(img):
        gray = Image.fromarray(_high_depth_array(img))
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.LANCZOS)
        arr = np.clip(np.asarray(gray, dtype=np.float32), 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray(arr)).unsqueeze(0).expand(3, -1, -1).clone()
    rgb = _to_rgb8(img)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def mask_array(path: Path) -> np.ndarray:
    """The mask at ``path`` at its native size as a boolean ``[H, W]`` array (any channel != 0)."""
    img = _open(path)
    if img.mode == "P":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.ndim == 3:
        channels = arr.shape[2]
        arr = arr[:, :, : 3 if channels >= 3 else 1]  # ignore alpha
        return np.any(arr != 0, axis=2)
    return arr != 0


def load_mask(path: Path, size: int) -> torch.Tensor:
    """Load a mask as a ``[size, size]`` float32 tensor in {0, 1} (Lanczos, then non-zero)."""
    import torch

    binary = mask_array(path)
    img = Image.fromarray(binary.astype(np.uint8) * 255)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img) > 0).float()


def save_mask(path: Path, mask: np.ndarray) -> None:
    """Write a boolean ``[H, W]`` mask as an 8-bit PNG with values 0/255."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(path)
