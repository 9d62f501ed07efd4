"""A small trainable convolutional detector that pgaudit can audit and harden as it is.

The contract pgaudit expects from a user detector (``pgaudit.models.adapters``):

- input: images ``[B, 3, H, W]`` with values in [0, 1] (no normalisation done for you);
- output: anomaly logits on a grid, ``[B, h, w]`` (also accepted: ``[B, 1, h, w]``, flat
  ``[B, h*w]``, or a dict with ``anomaly_map`` and an optional ``image_score`` ``[B]``),
  larger = more anomalous, differentiable w.r.t. the input;
- an ``image_size`` attribute (the square input side), or pass ``--image-size``.

``pgaudit attack mydetector.detectors:build DATA`` imports this module from the working
directory or ``PYTHONPATH`` and calls ``build()`` (with ``image_size=`` when ``--image-size`` is
given, because ``build`` accepts it).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.GELU()
    )


class ConvPatchDetector(nn.Module):
    """Three stride-2 stages and a 1x1 head: one anomaly logit per 8x8 patch, ``[B, S/8, S/8]``."""

    def __init__(self, image_size: int = 128, width: int = 16) -> None:
        super().__init__()
        self.image_size = image_size  # pgaudit reads this
        self.top_k = 3  # optional: image score = mean of the 3 largest patch logits
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.body = nn.Sequential(
            _stage(3, width), _stage(width, 2 * width), _stage(2 * width, 4 * width)
        )
        self.head = nn.Conv2d(4 * width, 1, 1)

    def forward(self, images: Tensor) -> Tensor:
        x = (images - self.mean) / self.std
        return self.head(self.body(x)).squeeze(1)


class ScoredDetector(ConvPatchDetector):
    """The same network returning a dict: the map and its own image score (a soft maximum)."""

    def forward(self, images: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        logits = super().forward(images)
        return {"anomaly_map": logits, "image_score": logits.flatten(1).logsumexp(dim=1)}


def build(image_size: int = 128) -> nn.Module:
    """The factory pgaudit calls. Loads ``$MYDETECTOR_WEIGHTS`` (a state_dict) when it is set."""
    torch.manual_seed(0)
    model = ConvPatchDetector(image_size)
    weights = os.environ.get("MYDETECTOR_WEIGHTS")
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def build_scored(image_size: int = 128) -> nn.Module:
    """A factory for the dict-output variant (``mydetector.detectors:build_scored``)."""
    torch.manual_seed(0)
    return ScoredDetector(image_size)
