"""Adaptive evaluation: attack the detector's real decision rule, through its randomness if any.

* :class:`EOTDetector` wraps a detector whose forward pass is random at inference (dropout left
  on, random input transforms, noise): its logits are the mean over ``n`` draws, so gradients are
  the expectation over transformation (EOT, Athalye et al. 2018) and attacks aim at the average
  behaviour instead of one random draw.
* :func:`adaptive_note` says, for results.json (``results["adaptive"]``), what the attacks
  differentiate: the image score rule and the pixel-map rule the metrics use, or a proxy.
* :func:`pixel_map_objective` is the localization objective on the smoothed pixel map itself (the
  map pixel AUROC is computed on), for attacks that want the exact rule instead of the grid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pgaudit.attacks.objectives import detection_objective
from pgaudit.models.detector import (
    DEFAULT_TOP_K,
    IMAGE_SCORE_ATTR,
    Detector,
    anomaly_maps,
    image_scores,
)

#: Draws averaged per forward pass by default (cost: ``n`` forwards and backwards per step).
DEFAULT_EOT_DRAWS = 8
_SCORE_ATTR = IMAGE_SCORE_ATTR


class EOTDetector(nn.Module):
    """A detector whose logits are the mean of ``n`` forward passes of a random ``detector``.

    Image score and pixel map follow the wrapped detector's own rules, applied to the averaged
    logits (a module-supplied image score, as adapters carry it, is averaged too). Attacks use it
    like any detector; ``eot_draws`` tells the report how many draws were averaged.
    """

    def __init__(self, detector: Detector, n: int = DEFAULT_EOT_DRAWS) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"EOT needs at least one draw, got n={n}")
        self.detector = detector
        self.eot_draws = int(n)
        self.image_size = int(detector.image_size)
        self.top_k = getattr(detector, "top_k", DEFAULT_TOP_K)

    def forward(self, images: Tensor) -> Tensor:
        draws = [self.detector(images) for _ in range(self.eot_draws)]
        logits = torch.stack(draws).mean(dim=0)
        scores = [getattr(d, _SCORE_ATTR, None) for d in draws]
        if all(s is not None for s in scores):
            setattr(logits, _SCORE_ATTR, torch.stack(scores).mean(dim=0))
        return logits

    def image_score(self, logits: Tensor) -> Tensor:
        """The wrapped detector's image score of (averaged) logits."""
        score = getattr(logits, _SCORE_ATTR, None)
        return score if score is not None else image_scores(self.detector, logits)

    def anomaly_map(self, logits: Tensor, size: int) -> Tensor:
        """The wrapped detector's pixel map of (averaged) logits."""
        return anomaly_maps(self.detector, logits, size)


def pixel_map_objective(detector: Detector, logits: Tensor, masks: Tensor) -> Tensor:
    """``mean(map | m=0) − mean(map | m=1)`` per image on the smoothed pixel map (``[B]``).

    ``masks``: ``[B, S, S]`` pixel ground truth (all zero for normal images); the map is the
    detector's own :func:`~pgaudit.models.detector.anomaly_maps` at the mask size, i.e. exactly
    what pixel AUROC ranks. An empty side counts 0.
    """
    maps = anomaly_maps(detector, logits, int(masks.shape[-1])).flatten(1)
    m = (masks.flatten(1) >= 0.5).to(maps.dtype)
    n_anom = m.sum(dim=1)
    mean_norm = (maps * (1 - m)).sum(dim=1) / (m.shape[1] - n_anom).clamp_min(1)
    mean_anom = (maps * m).sum(dim=1) / n_anom.clamp_min(1)
    return mean_norm - mean_anom


def _inner(detector: Detector) -> Detector:
    return detector.detector if isinstance(detector, EOTDetector) else detector


def _score_rule(detector: Detector) -> str:
    inner = _inner(detector)
    if callable(getattr(inner, "image_score", None)):
        return "the detector's own image_score() of its logits"
    k = getattr(inner, "top_k", DEFAULT_TOP_K)
    return f"top-{k} mean of the logit map"


def _map_rule(detector: Detector) -> str:
    if callable(getattr(_inner(detector), "anomaly_map", None)):
        return "the detector's own anomaly_map() of its logits"
    return "bilinear upsampling of the logit map to the image size + Gaussian smoothing"


def detection_objective_is_exact(detector: Detector, grid: tuple[int, int] = (4, 4)) -> bool:
    """True when the detection objective equals ``±(image score − t)`` on random logits.

    A runtime guard that :func:`pgaudit.attacks.objectives.detection_objective` differentiates the
    detector's real score rule (its own ``image_score`` or its top-k), not a proxy.
    """
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((2, *grid), generator=gen)
    # adapters read a module-given score off the logits: give them one (no fallback warning)
    setattr(logits, _SCORE_ATTR, torch.randn(2, generator=gen))
    labels = torch.tensor([0, 1])
    try:
        got = detection_objective(detector, logits, labels, threshold=0.25)
        want = image_scores(detector, logits) - 0.25
    except Exception:  # noqa: BLE001 - a detector rule that rejects random logits: unknown
        return False
    return bool(torch.allclose(got, torch.stack([want[0], -want[1]]), atol=1e-6))


def adaptive_note(detector: Detector, eot: bool | None = None) -> dict[str, Any]:
    """What the attacks differentiate, for ``results["adaptive"]``.

    ``eot``: whether the attacks ran through :class:`EOTDetector` (default: whether ``detector``
    is one). The detection objective is checked at run time to use the real image-score rule.
    """
    eot = isinstance(detector, EOTDetector) if eot is None else bool(eot)
    draws = getattr(detector, "eot_draws", None) if eot else None
    differentiated = f"image score = {_score_rule(detector)}; pixel map = {_map_rule(detector)}"
    if draws:
        differentiated += f" (logits averaged over {draws} random forward passes: EOT)"
    exact = detection_objective_is_exact(detector)
    verified = "(verified at run time)" if exact else "(NOT verified: check the score rule)"
    note: dict[str, Any] = {
        "differentiated": differentiated,
        "detection_objective": f"(1 - 2y)(s - t) on the detector's real image score s {verified}",
        "localization_objective": (
            "mean logit over normal grid cells minus mean over anomalous cells (ground truth "
            "pooled to the logit grid, any-pixel rule): a proxy of the pixel map, which is "
            "derived from these logits but not differentiated itself"
        ),
        "eot": eot,
        "eot_draws": draws,
    }
    if not exact:
        note["warning"] = (
            "the detection objective does not reproduce the detector's image score: the attacks "
            "may target a proxy of the decision rule"
        )
    return note
