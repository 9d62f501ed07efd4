"""The Detector seam: :class:`Detector`, its typed output and the shared scoring rule.

Anything that maps images in [0, 1] (``[B, 3, H, W]``) to differentiable anomaly logits on a grid
(``[B, h, w]``, patch or pixel) is auditable. :class:`Detector` is the base class of pgaudit's own
models and of :class:`~pgaudit.models.adapters.DetectorAdapter` (which wraps any user module):

* ``detector(images)``: the logits ``[B, h, w]`` (what training differentiates);
* ``detector.predict(images)``: a :class:`DetectorOutput` (logits and, when the detector gives
  one, its own image score), what attacks and metrics use;
* ``detector.scores(output)``: the image score ``[B]`` the metrics rank (the output's own, else
  ``image_score(logits)``: top-k mean by default); ``anomaly_map(logits, size)``: the pixel map
  (bilinear upsample + Gaussian smoothing by default); both differentiable;
* ``detector.card()``: a :class:`DetectorCard` (model card, config, source) for results.json and
  checkpoints.

:func:`attack_mode` puts a detector in eval mode with frozen parameters for an attack and
restores both afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgaudit.precision import as_fp32

DEFAULT_TOP_K = 3
# Smoothing of the pixel map: sigma 6 and radius 7 at 224 px (scaled with the map size).
SMOOTH_SIGMA_AT_224 = 6.0
SMOOTH_RADIUS_AT_224 = 7

OWN_SCORE_RULE = "the detector's own image_score() of its logits"
OWN_MAP_RULE = "the detector's own anomaly_map() of its logits"
DEFAULT_MAP_RULE = "bilinear upsampling of the logit map to the image size + Gaussian smoothing"


class DetectorOutput(NamedTuple):
    """One forward pass: ``logits`` ``[B, h, w]`` and the detector's own ``image_score`` ``[B]``
    (None: the score is ``detector.image_score(logits)``). Autograd flows through both."""

    logits: Tensor
    image_score: Tensor | None = None


def fp32_output(output: DetectorOutput) -> DetectorOutput:
    """``output`` with float32 logits and score (after a low-precision forward pass)."""
    score = output.image_score
    return DetectorOutput(as_fp32(output.logits), None if score is None else as_fp32(score))


@dataclass(frozen=True)
class DetectorCard:
    """What results.json and checkpoints say of a detector.

    ``info``: the model card (architecture, image size, grid, parameters, …: the ``model.card``
    section); ``config``: the settings it was built from (``model.config``), if any;
    ``source_spec``: the ``package.module:function`` that rebuilds it (a hardened copy is saved
    as that spec + weights), if any.
    """

    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    source_spec: str | None = None


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


#: The official PatchGuard code's pixel-map rule (its test): bilinear upsampling, then a Gaussian
#: of sigma 6 truncated at radius 7 px at every image size, with scipy's default border
#: ('reflect': the edge pixel repeated, numpy's 'symmetric').
OFFICIAL_SIGMA, OFFICIAL_RADIUS = 6.0, 7
OFFICIAL_MAP_RULE = (
    "the official PatchGuard rule: bilinear upsampling + Gaussian sigma 6, radius 7 px, "
    "scipy's reflect border, at any size"
)


def _symmetric_pad(maps: Tensor, radius: int) -> Tensor:
    """Pad ``[B, 1, H, W]`` by ``radius`` on each side, the edge pixel repeated (numpy
    'symmetric', scipy 'reflect', periodic for maps smaller than the radius); torch's own
    'reflect' skips the edge pixel."""
    for dim in (-1, -2):
        n = maps.shape[dim]
        index = torch.arange(-radius, n + radius, device=maps.device) % (2 * n)
        index = torch.where(index >= n, 2 * n - 1 - index, index)
        maps = maps.index_select(dim, index)
    return maps


def official_upsample(logits: Tensor, size: int) -> Tensor:
    """The official PatchGuard pixel map of ``[B, h, w]`` logits (:data:`OFFICIAL_MAP_RULE`);
    differentiable, like :func:`smooth_upsample`."""
    maps = F.interpolate(logits.unsqueeze(1), size=(size, size), mode="bilinear",
                         align_corners=False)  # fmt: skip
    kernel = _gaussian_kernel1d(OFFICIAL_SIGMA, OFFICIAL_RADIUS, maps.device, maps.dtype)
    maps = _symmetric_pad(maps, OFFICIAL_RADIUS)
    maps = F.conv2d(maps, kernel.view(1, 1, 1, -1))
    maps = F.conv2d(maps, kernel.view(1, 1, -1, 1))
    return maps.squeeze(1)


class Detector(nn.Module):
    """Base class of a detector: ``image_size`` and ``forward(images) -> logits [B, h, w]``.

    Subclasses set ``image_size`` (the square input side) and may set ``top_k`` (the image score
    is the top-k mean of the logits), ``grid`` (the logit grid, if fixed), or override
    :meth:`image_score`, :meth:`anomaly_map`, :meth:`predict` (to return an own image score)
    and :meth:`card`.
    """

    image_size: int
    top_k: int = DEFAULT_TOP_K
    grid: tuple[int, int] | None = None

    def predict(self, images: Tensor) -> DetectorOutput:
        """The typed output of one forward pass (attacks and metrics call this)."""
        return DetectorOutput(self(images))

    def image_score(self, logits: Tensor) -> Tensor:
        """The image score rule ``[B, h, w]`` -> ``[B]`` (default: top-k mean)."""
        return topk_mean(logits, self.top_k)

    def scores(self, output: DetectorOutput) -> Tensor:
        """The image score ``[B]`` the metrics rank: the output's own, else the rule's."""
        if output.image_score is not None:
            return output.image_score
        return self.image_score(output.logits)

    def anomaly_map(self, logits: Tensor, size: int) -> Tensor:
        """The pixel anomaly map ``[B, size, size]`` (default: upsample + smooth)."""
        return smooth_upsample(logits, size)

    def rules(self) -> tuple[str, str]:
        """(image score rule, pixel map rule) in words, for results.json's ``adaptive`` note."""
        cls = type(self)
        own_score = cls.image_score is not Detector.image_score
        own_map = cls.anomaly_map is not Detector.anomaly_map
        return (
            OWN_SCORE_RULE if own_score else f"top-{self.top_k} mean of the logit map",
            OWN_MAP_RULE if own_map else DEFAULT_MAP_RULE,
        )

    def card(self) -> DetectorCard:
        """The model card (default: architecture, image size, parameter count)."""
        return DetectorCard(
            {
                "architecture": type(self).__name__,
                "image_size": int(self.image_size),
                "parameters": sum(p.numel() for p in self.parameters()),
            }
        )


M = TypeVar("M")


@contextlib.contextmanager
def attack_mode(detector: M) -> Iterator[M]:
    """Eval mode and ``requires_grad=False`` on every parameter while attacking ``detector``.

    On exit (also on an exception) every submodule's ``training`` flag and every parameter's
    ``requires_grad`` flag are restored exactly. Anything that is not an ``nn.Module`` (a plain
    callable, None) passes through unchanged.
    """
    if not isinstance(detector, nn.Module):
        yield detector
        return
    modes = [(m, m.training) for m in detector.modules()]
    flags = [(p, p.requires_grad) for p in detector.parameters()]
    try:
        detector.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield detector
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
