"""Held-out validation and robust model selection (robust overfitting, Rice et al. 2020).

A fraction of the normal training images is set aside (:func:`split_validation`; never trained
on). Each held-out image gets ``per_image`` pseudo-anomalies drawn once, from a fixed seed, so
every epoch is judged on the same images (:func:`make_validation_set`). :func:`validate` scores
the model on them clean and under the training attack (PGD, L∞, full ε, raising normal images'
patch logits and top-k score and lowering the pseudo-anomalies' patches); each score is the mean
of the image AUROC (normal vs pseudo-anomalous images) and the patch AUROC (all patches).

**The selection rule** (:func:`select_epoch`): among the validated epochs whose clean score is
within ``margin`` of the best clean score, take the one with the best robust score (ties: the
higher clean score, then the later epoch). So robustness is never bought with more than
``margin`` of clean validation accuracy. A clean-trained run (no adversarial terms) takes the
epoch with the best clean score. :class:`Selection` keeps the weights of exactly the epochs that
the rule could still choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pgaudit.data.grid import mask_to_grid
from pgaudit.fapa import FapaConfig, make_pseudo_anomalies
from pgaudit.metrics import image_auroc
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import attack_mode
from pgaudit.training.adversarial import training_attack


def split_validation(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, validation)`` positions of ``n`` images; disjoint, sorted, deterministic.

    ``fraction`` 0 holds nothing out; otherwise at least 2 images are held out and at least one
    is left for training.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    k = 0 if fraction == 0 else min(n - 1, max(2, round(n * fraction)))
    if k <= 0:
        return list(range(n)), []
    order = np.random.default_rng(np.random.SeedSequence([seed, 1709])).permutation(n)
    held = sorted(int(i) for i in order[:k])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


@dataclass(frozen=True)
class ValidationSet:
    """Held-out normal images and their pseudo-anomalies, with patch labels on the model's grid."""

    images: Tensor  # [N + N*per_image, 3, S, S]: normals first
    labels: Tensor  # [N + N*per_image, h, w] patch labels
    image_labels: np.ndarray  # [N + N*per_image] 0 normal, 1 pseudo-anomalous


def make_validation_set(
    items: Sequence[dict[str, Any]],
    grid: tuple[int, int],
    fapa: FapaConfig,
    *,
    seed: int,
    per_image: int = 2,
) -> ValidationSet:
    """The validation set from held-out dataset items (``{"image", "foreground"}``)."""
    normals = torch.stack([it["image"].float() for it in items])
    anomalies, masks = [], []
    for copy in range(per_image):
        for i, it in enumerate(items):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 2711, copy, i]))
            image, mask = make_pseudo_anomalies(
                it["image"][None].float(), it["foreground"][None].float(), rng, fapa
            )
            anomalies.append(image)
            masks.append(mask)
    images = torch.cat([normals, *anomalies])
    grid_labels = torch.cat([torch.zeros(len(items), *grid), mask_to_grid(torch.cat(masks), grid)])
    image_labels = np.r_[np.zeros(len(items)), np.ones(len(anomalies))].astype(int)
    return ValidationSet(images, grid_labels, image_labels)


@torch.no_grad()
def _score(model: nn.Module, images: Tensor, labels: Tensor, image_labels: np.ndarray) -> float:
    detector = as_detector(model)
    output = detector.predict(images)
    logits = output.logits
    img = image_auroc(image_labels, detector.scores(output).float().cpu().numpy())
    patch = image_auroc(
        (labels.flatten() > 0).cpu().numpy().astype(int), logits.flatten().float().cpu().numpy()
    )
    return 0.5 * (img + patch)


def validate(
    model: nn.Module,
    vset: ValidationSet,
    *,
    eps: float,
    steps: int,
    seed: int,
    device: torch.device,
    robust: bool = True,
    precision: str = "fp32",
) -> dict[str, float]:
    """``{"clean": score, "robust": score}`` (``robust`` only when asked), in
    :func:`~pgaudit.models.detector.attack_mode` (the model's modes and flags restored after).
    ``precision``: the validation attack's (crafting); the scores are fp32."""
    images, labels = vset.images.to(device), vset.labels.to(device)
    with attack_mode(model):
        out = {"clean": _score(model, images, labels, vset.image_labels)}
        if robust and eps > 0 and steps > 0:
            adv = training_attack(
                model, images, labels, eps=eps, steps=steps, topk_weight=1.0,
                rng=np.random.RandomState(seed % 2**32), precision=precision,
            )  # fmt: skip
            out["robust"] = _score(model, adv, labels, vset.image_labels)
    return out


def _key(entry: dict[str, Any], robust: bool) -> tuple[float, ...]:
    if robust:
        return (entry["robust"], entry["clean"], entry["epoch"])
    return (entry["clean"], entry["epoch"])


def select_epoch(history: Sequence[dict[str, Any]], margin: float, robust: bool) -> int | None:
    """The epoch the selection rule picks from ``[{"epoch", "clean", "robust"}, …]`` (None: empty)."""
    if not history:
        return None
    best_clean = max(h["clean"] for h in history)
    candidates = [h for h in history if h["clean"] >= best_clean - margin]
    return int(max(candidates, key=lambda h: _key(h, robust))["epoch"])


@dataclass
class Selection:
    """Validated epochs and the weights of those the rule could still pick."""

    margin: float
    robust: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[int, dict[str, Tensor]] = field(default_factory=dict)

    def offer(self, epoch: int, scores: dict[str, float], state: dict[str, Tensor]) -> None:
        """Record an epoch's validation scores and keep its weights while they may be chosen."""
        entry = {"epoch": epoch, **scores}
        self.history.append(entry)
        self.weights[epoch] = {k: v.detach().cpu().clone() for k, v in state.items()}
        alive = {
            a["epoch"]
            for a in self.history
            if a["epoch"] in self.weights
            and not any(
                b["clean"] >= a["clean"] and _key(b, self.robust) > _key(a, self.robust)
                for b in self.history
            )  # fmt: skip
        }
        self.weights = {e: w for e, w in self.weights.items() if e in alive}

    def chosen(self) -> int | None:
        return select_epoch(self.history, self.margin, self.robust)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "weights": self.weights}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.history = [dict(h) for h in saved["history"]]
        self.weights = {int(e): w for e, w in saved["weights"].items()}
