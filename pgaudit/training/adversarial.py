"""The training-time attack: PGD on the patch objective, weights frozen, fused attention path.

Reuses :func:`pgaudit.attacks.native.pgd` (L∞, random start, ``x ← Π_ε(clip₀¹(x + α·sign ∇))``)
with the localization objective of :mod:`pgaudit.attacks.objectives` (``mean(s | m=0) −
mean(s | m=1)`` per image, summed over the batch); on normal images optionally plus
``topk_weight`` times the detection objective (raise the top-k image score), the score an audit's
detection attack pushes up. During the attack the model is in eval mode (no
dropout), its parameters have ``requires_grad=False`` (no parameter gradients are computed) and it
is called without ``return_attention`` (no attention matrices are materialised). ``precision``:
that of the attack's forward/backward passes (:func:`pgaudit.precision.crafting`); the objective
is computed in fp32.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from pgaudit.attacks.native import pgd
from pgaudit.attacks.objectives import detection_objective, localization_objective
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import attack_mode, fp32_output
from pgaudit.precision import crafting


def training_attack(
    model: nn.Module,
    images: Tensor,
    grid_labels: Tensor,
    *,
    eps: float,
    steps: int,
    step_size_factor: float = 2.5,
    topk_weight: float = 0.0,
    rng: np.random.RandomState | None = None,
    start: Tensor | None = None,
    precision: str = "fp32",
) -> Tensor:
    """Adversarial versions of ``images`` (``[B,3,S,S]`` in [0,1]) against their patch labels.

    ``grid_labels``: ``[B,h,w]`` patch labels (all zero for normal images); an image is anomalous
    for the detection term when any of its patches is. ``rng`` draws the random start (pass a
    seeded one for reproducible runs); ``start`` replaces the random start (e.g. perturbations
    carried over from the previous epoch). Returns detached images in [0, 1].
    """
    if eps <= 0 or steps < 1:
        return images.detach()
    image_labels = (grid_labels.flatten(1).amax(dim=1) > 0).to(images.dtype)
    detector = as_detector(model)

    def objective(x: Tensor) -> Tensor:
        with crafting(precision, x.device):
            output = fp32_output(detector.predict(x))
        values = localization_objective(output.logits, grid_labels)
        if topk_weight:  # normal images only: an anomalous image's top-k is its defect
            raise_topk = detection_objective(detector, output, image_labels) * (1 - image_labels)
            values = values + topk_weight * raise_topk
        return values

    with attack_mode(detector):
        return pgd(
            objective,
            images,
            eps=eps,
            norm="inf",
            steps=steps,
            step_size=step_size_factor * eps / steps,
            random_init=True,
            rng=rng,
            start=start,
        )
