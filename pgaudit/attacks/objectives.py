"""What an attack maximises, per image: the detection and localization objectives.

Both are margin-style (linear in the logits), so their gradients never vanish however large the
scores are, unlike cross-entropy on a saturated sigmoid. The two ``*MarginLoss`` modules express
the same objectives on the outputs of the ART estimators in :mod:`pgaudit.attacks.art_bridge`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pgaudit.models.detector import Detector, DetectorOutput

Objective = Literal["detection", "localization"]
OBJECTIVES: tuple[str, ...] = ("detection", "localization")
#: "margin": the objectives above; "smoothmax": a second loss per objective that concentrates on
#: the most decisive cells (:func:`smoothmax_detection`, :func:`smoothmax_localization`).
LOSSES: tuple[str, ...] = ("margin", "smoothmax")


def detection_objective(
    detector: Detector, output: DetectorOutput, labels: Tensor, threshold: float = 0.0
) -> Tensor:
    """``(1 - 2y) · (s - t)`` per image: raise normal scores, lower anomalous ones (``[B]``).

    ``s`` is the detector's real image score of ``output`` (``detector.scores``: its own, or its
    top-k rule), ``y`` the label (0 normal, 1 anomalous), ``t`` the decision threshold (a
    constant: it shifts the value, not the gradient).
    """
    scores = detector.scores(output)
    sign = 1.0 - 2.0 * labels.to(device=scores.device, dtype=scores.dtype)
    return sign * (scores - threshold)


def localization_objective(logits: Tensor, grid_masks: Tensor) -> Tensor:
    """``mean(logits | m=0) − mean(logits | m=1)`` per image (``[B]``); an empty side counts 0.

    ``logits``: ``[B, h, w]`` or flat ``[B, h·w]``; ``grid_masks``: the ground truth on the same
    grid (:func:`pgaudit.data.grid.mask_to_grid`), all zero for normal images.
    """
    flat = logits.flatten(1)
    m = grid_masks.flatten(1).to(device=flat.device, dtype=flat.dtype)
    n_anom = m.sum(dim=1)
    n_norm = m.shape[1] - n_anom
    mean_norm = (flat * (1 - m)).sum(dim=1) / n_norm.clamp_min(1)
    mean_anom = (flat * m).sum(dim=1) / n_anom.clamp_min(1)
    return mean_norm - mean_anom


def _masked_logsumexp(flat: Tensor, mask: Tensor) -> Tensor:
    """``log Σ exp`` over the cells where ``mask`` is 1, per image (0 where there are none)."""
    values = flat.masked_fill(mask <= 0, float("-inf")).logsumexp(dim=1)
    return torch.where(mask.sum(dim=1) > 0, values, torch.zeros_like(values))


def smoothmax_detection(logits: Tensor, labels: Tensor, threshold: float = 0.0) -> Tensor:
    """``(1 - 2y) · (logsumexp(logits) - t)`` per image: the second detection loss.

    A smooth maximum of the patch logits instead of the top-k score: lowering it on an anomalous
    image pushes down every high cell at once, including those that would replace the current
    top-k (which the margin on the top-k score cannot see).
    """
    flat = logits.flatten(1)
    sign = 1.0 - 2.0 * labels.to(device=flat.device, dtype=flat.dtype)
    return sign * (flat.logsumexp(dim=1) - threshold)


def smoothmax_localization(logits: Tensor, grid_masks: Tensor) -> Tensor:
    """``logsumexp(logits | m=0) − logsumexp(logits | m=1)`` per image: the second localization
    loss, raising the highest normal cells and lowering the highest defective ones (the pairs
    that decide the pixel ranking), where the margin moves every cell alike."""
    flat = logits.flatten(1)
    m = grid_masks.flatten(1).to(device=flat.device, dtype=flat.dtype)
    return _masked_logsumexp(flat, 1 - m) - _masked_logsumexp(flat, m)


def objective_values(
    detector: Detector,
    output: DetectorOutput,
    objective: str,
    labels: Tensor,
    grid_masks: Tensor | None,
    threshold: float = 0.0,
    loss: str = "margin",
) -> Tensor:
    """The chosen objective per image (``[B]``) on one ``detector.predict`` output, larger = more
    successful attack (``loss``: one of :data:`LOSSES`)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    if objective == "detection":
        if loss == "smoothmax":
            return smoothmax_detection(output.logits, labels, threshold)
        return detection_objective(detector, output, labels, threshold)
    if objective == "localization":
        if grid_masks is None:
            raise ValueError("the localization objective needs ground-truth masks")
        if loss == "smoothmax":
            return smoothmax_localization(output.logits, grid_masks)
        return localization_objective(output.logits, grid_masks)
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


class DetectionMarginLoss(nn.Module):
    """Loss for a two-logit head ``z = [-(s-t), s-t]`` with labels ``y`` (one-hot or indices).

    ``(z_other − z_true) / 2 = (1 − 2y)(s − t)``: the detection objective, never saturating.
    ART maximises it (untargeted); it honours ``reduction`` ("none" | "mean" | "sum"), which
    ART's AutoPGD switches per call.
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        y = torch.as_tensor(y, device=z.device)
        if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
            y = nn.functional.one_hot(y.reshape(-1).long(), num_classes=2)
        y = y.to(z.dtype)
        per_image = 0.5 * ((z * (1 - y)).sum(dim=1) - (z * y).sum(dim=1))
        return _reduce(per_image, self.reduction)


class LocalizationMarginLoss(nn.Module):
    """Loss for a flat patch-logit head ``[B, h·w]`` with float multi-hot labels (the grid mask).

    Equals :func:`localization_objective`; honours ``reduction`` like :class:`DetectionMarginLoss`.
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: Tensor, y: Tensor) -> Tensor:
        y = torch.as_tensor(y, device=logits.device)
        return _reduce(localization_objective(logits, y), self.reduction)
