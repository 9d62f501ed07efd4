"""The Detector protocol: the seam of the toolkit.

Anything that maps images in [0, 1] (``[B, 3, H, W]``) to differentiable anomaly logits on a grid
(``[B, h, w]``, patch or pixel) is auditable. The image score and the pixel anomaly map are derived
from those logits by one shared rule (top-k mean; bilinear upsample + Gaussian smoothing), which a
detector may override by defining ``image_score(logits)`` or ``anomaly_map(logits, size)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_TOP_K = 3
# Logit attribute that carries a module's own image score (set by adapters, averaged by EOT).
IMAGE_SCORE_ATTR = "_pgaudit_image_score"
# Smoothing of the pixel map: sigma 6 and radius 7 at 224 px (scaled with the map size).
SMOOTH_SIGMA_AT_224 = 6.0
SMOOTH_RADIUS_AT_224 = 7


@runtime_checkable
class Detector(Protocol):
    """What pgaudit needs from a detector.

    ``image_size``: the square input side the detector expects.
    ``__call__(images)``: ``[B, 3, S, S]`` in [0, 1] -> anomaly logits ``[B, h, w]``.
    Optional: ``top_k`` (int), ``image_score(logits)``, ``anomaly_map(logits, size)``.
    """

    image_size: int

    def __call__(self, images: Tensor) -> Tensor: ...


def topk_mean(logits: Tensor, k: int = DEFAULT_TOP_K) -> Tensor:
    """Mean of the ``k`` largest logits of each map: ``[B, h, w]`` -> ``[B]``."""
    flat = logits.flatten(1)
    k = max(1, min(k, flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(dim=1)


def _gaussian_kernel1d(sigma: float, radius: int, device, dtype) -> Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def smooth_upsample(logits: Tensor, size: int, sigma: float | None = None) -> Tensor:
    """Bilinearly upsample ``[B, h, w]`` logits to ``[B, size, size]`` and Gaussian-smooth them.

    The smoothing is differentiable (a separable convolution), so attacks may target the map.
    ``sigma`` defaults to 6 px at 224 px, scaled with ``size``; ``sigma=0`` disables smoothing.
    """
    maps = logits.unsqueeze(1)
    if maps.shape[-2:] != (size, size):
        maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
    if sigma is None:
        sigma = SMOOTH_SIGMA_AT_224 * size / 224
    if sigma > 0:
        radius = max(1, round(SMOOTH_RADIUS_AT_224 * size / 224))
        kernel = _gaussian_kernel1d(sigma, radius, maps.device, maps.dtype)
        maps = F.pad(maps, (radius, radius, radius, radius), mode="reflect")
        maps = F.conv2d(maps, kernel.view(1, 1, 1, -1))
        maps = F.conv2d(maps, kernel.view(1, 1, -1, 1))
    return maps.squeeze(1)


def image_scores(detector: Detector, logits: Tensor) -> Tensor:
    """The detector's image anomaly score ``[B]`` from its logits (its own rule if it has one)."""
    own = getattr(detector, "image_score", None)
    if callable(own):
        return own(logits)
    return topk_mean(logits, getattr(detector, "top_k", DEFAULT_TOP_K))


def anomaly_maps(detector: Detector, logits: Tensor, size: int) -> Tensor:
    """The detector's pixel anomaly map ``[B, size, size]`` (its own rule if it has one)."""
    own = getattr(detector, "anomaly_map", None)
    if callable(own):
        return own(logits, size)
    return smooth_upsample(logits, size)


def freeze(module: nn.Module) -> list[bool]:
    """Stop parameter gradients (attacks need only input gradients); returns the previous flags."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    return flags


def unfreeze(module: nn.Module, flags: list[bool]) -> None:
    """Restore the ``requires_grad`` flags returned by :func:`freeze`."""
    for p, flag in zip(module.parameters(), flags, strict=True):
        p.requires_grad_(flag)
