"""The bridge to the Adversarial Robustness Toolbox: estimators over a Detector, and ART attacks.

ART has no anomaly-detection or segmentation estimator, so each objective gets a small
``PyTorchClassifier`` whose own attack loops then run unchanged:

* detection: a two-logit head ``[-(s-t), s-t]`` over the real image score ``s`` (top-k rule) and
  the operating threshold ``t``, with :class:`~pgaudit.attacks.objectives.DetectionMarginLoss`;
* localization: the flat patch logits as ``h·w`` "classes", the float multi-hot grid mask as
  ``y`` and :class:`~pgaudit.attacks.objectives.LocalizationMarginLoss` (ART leaves such labels
  untouched when the loss is custom).

The heads run the detector under the bridge's crafting precision (:mod:`pgaudit.precision`) and
hand ART fp32 outputs. The attacks themselves are built by :mod:`pgaudit.attacks.algorithms` (``ArtAttack.art_attack``).

ART is imported lazily here only (it costs ~1.2 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from pgaudit.attacks.objectives import DetectionMarginLoss, LocalizationMarginLoss
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import Detector
from pgaudit.precision import as_fp32, crafting

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

    from pgaudit.attacks.algorithms import ArtAttack


class DetectionHead(nn.Module):
    """``images -> [-(s - t), s - t]``: a binary classifier view of the detector's image score."""

    def __init__(self, detector: Detector, threshold: float = 0.0, precision: str = "fp32") -> None:
        super().__init__()
        self.detector = detector
        self.threshold = float(threshold)
        self.precision = precision

    def forward(self, images: Tensor) -> Tensor:
        with crafting(self.precision, images.device):
            score = self.detector.scores(self.detector.predict(images.float()))
        margin = as_fp32(score) - self.threshold
        return torch.stack([-margin, margin], dim=1)


class PatchLogitHead(nn.Module):
    """``images -> [B, h·w]``: the detector's logit map, flattened (one "class" per cell)."""

    def __init__(self, detector: Detector, precision: str = "fp32") -> None:
        super().__init__()
        self.detector = detector
        self.precision = precision

    def forward(self, images: Tensor) -> Tensor:
        with crafting(self.precision, images.device):
            logits = self.detector(images.float())
        return as_fp32(logits).flatten(1)


def _art_device(device: torch.device) -> contextlib.AbstractContextManager:
    """ART runs on ``cuda:<current>``; make the detector's GPU the current one while it runs."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def never_successful(y_pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Square attack's success test that never fires, so the full query budget is spent."""
    return np.zeros(len(y_pred), dtype=bool)


class ArtBridge:
    """Builds (and caches) ART estimators for one detector and runs ART attacks on batches."""

    def __init__(
        self,
        detector: Detector,
        *,
        input_shape: tuple[int, ...],
        cells: int,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        self.detector = as_detector(detector)
        self.precision = precision  # of ART's gradient passes (resolved; see pgaudit.precision)
        self.input_shape = tuple(input_shape)
        self.cells = int(cells)
        self.device = torch.device(device)
        self._cache: dict[tuple[str, float], PyTorchClassifier] = {}

    def classifier(self, objective: str, threshold: float = 0.0) -> PyTorchClassifier:
        """The ART estimator for ``objective`` (detection head at ``threshold``, or patch logits)."""
        key = (objective, float(threshold) if objective == "detection" else 0.0)
        if key not in self._cache:
            from art.estimators.classification import PyTorchClassifier

            if objective == "detection":
                head: nn.Module = DetectionHead(self.detector, threshold, self.precision)
                loss: nn.Module = DetectionMarginLoss()
                nb_classes = 2
            else:
                if self.cells < 2:
                    raise ValueError("the localization objective needs a logit grid of >= 2 cells")
                head, loss, nb_classes = (
                    PatchLogitHead(self.detector, self.precision),
                    LocalizationMarginLoss(),
                    self.cells,
                )
            with _art_device(self.device):
                self._cache[key] = PyTorchClassifier(
                    model=head,
                    loss=loss,
                    input_shape=self.input_shape,
                    nb_classes=nb_classes,
                    clip_values=(0.0, 1.0),
                    device_type="gpu" if self.device.type == "cuda" else "cpu",
                )
        return self._cache[key]

    def generate(
        self,
        attack: ArtAttack,
        images: Tensor,
        labels: Tensor,
        grid_masks: Tensor | None,
        threshold: float,
    ) -> Tensor:
        """One ART run of ``attack`` on a batch; always passes the true ``y``. Returns [B,3,S,S]."""
        spec = attack.spec
        classifier = self.classifier(spec.objective, threshold)
        if spec.objective == "detection":
            y = np.eye(2, dtype=np.float32)[labels.cpu().numpy().astype(int)]
        else:
            if grid_masks is None:
                raise ValueError("the localization objective needs ground-truth masks")
            y = grid_masks.flatten(1).float().cpu().numpy()
        x = images.detach().float().cpu().numpy()
        with _art_device(self.device), _without_success_log():
            adv = attack.art_attack(classifier, batch_size=len(x)).generate(x=x, y=y)
        return torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(images.device)


@contextlib.contextmanager
def _without_success_log() -> Iterator[None]:
    """Skip the success rate ART's PGD computes only for a log line (two extra forward passes).

    ART 1.20 evaluates ``compute_success`` eagerly as an argument of ``logger.info`` after every
    ``generate``; the adversarial images do not depend on it.
    """
    from art.attacks.evasion.projected_gradient_descent import (
        projected_gradient_descent_pytorch as pgd_module,
    )

    original = pgd_module.compute_success
    pgd_module.compute_success = lambda *args, **kwargs: float("nan")
    try:
        yield
    finally:
        pgd_module.compute_success = original


def per_image_loss(loss_fn: nn.Module, pred: Tensor, y: Tensor) -> Tensor:
    """``loss_fn`` per image (its reduction set to "none" for the call)."""
    previous = loss_fn.reduction
    loss_fn.reduction = "none"
    try:
        return loss_fn(pred, y)
    finally:
        loss_fn.reduction = previous
