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
from torch import Tensor

from pgaudit.attacks.objectives import detection_objective
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import Detector, DetectorOutput

#: Draws averaged per forward pass by default (cost: ``n`` forwards and backwards per step).
DEFAULT_EOT_DRAWS = 8


class EOTDetector(Detector):
    """A detector whose logits are the mean of ``n`` forward passes of a random ``detector``.

    Image score and pixel map follow the wrapped detector's own rules, applied to the averaged
    logits (an image score the detector gives itself is averaged over the draws too). Attacks
    use it like any detector; ``eot_draws`` tells the report how many draws were averaged.
    """

    def __init__(self, detector: Any, n: int = DEFAULT_EOT_DRAWS) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"EOT needs at least one draw, got n={n}")
        self.detector = detector  # registered as given: the weights keep their key names
        self._inner: Detector = as_detector(detector)
        self.eot_draws = int(n)
        self.image_size = int(self._inner.image_size)
        self.top_k = self._inner.top_k

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_inner":  # the Detector view of ``detector``, not a second submodule
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def predict(self, images: Tensor) -> DetectorOutput:
        draws = [self._inner.predict(images) for _ in range(self.eot_draws)]
        logits = torch.stack([d.logits for d in draws]).mean(dim=0)
        scores = [d.image_score for d in draws]
        if all(s is not None for s in scores):
            return DetectorOutput(logits, torch.stack(scores).mean(dim=0))  # type: ignore[misc]
        return DetectorOutput(logits)

    def forward(self, images: Tensor) -> Tensor:
        return self.predict(images).logits

    def image_score(self, logits: Tensor) -> Tensor:
        """The wrapped detector's image score rule on (averaged) logits."""
        return self._inner.image_score(logits)

    def anomaly_map(self, logits: Tensor, size: int) -> Tensor:
        """The wrapped detector's pixel map of (averaged) logits."""
        return self._inner.anomaly_map(logits, size)

    def rules(self) -> tuple[str, str]:
        return self._inner.rules()


def pixel_map_objective(detector: Detector, logits: Tensor, masks: Tensor) -> Tensor:
    """``mean(map | m=0) − mean(map | m=1)`` per image on the smoothed pixel map (``[B]``).

    ``masks``: ``[B, S, S]`` pixel ground truth (all zero for normal images); the map is the
    detector's own ``anomaly_map`` at the mask size, i.e. exactly
    what pixel AUROC ranks. An empty side counts 0.
    """
    maps = as_detector(detector).anomaly_map(logits, int(masks.shape[-1])).flatten(1)
    m = (masks.flatten(1) >= 0.5).to(maps.dtype)
    n_anom = m.sum(dim=1)
    mean_norm = (maps * (1 - m)).sum(dim=1) / (m.shape[1] - n_anom).clamp_min(1)
    mean_anom = (maps * m).sum(dim=1) / n_anom.clamp_min(1)
    return mean_norm - mean_anom


#: L2 finite-difference steps, tried in turn: a curved score matches at a smaller one.
_STEPS = (1e-2, 1e-3, 1e-4)


def _matches(
    detector: Detector, x: Tensor, u: Tensor, step: float, analytic: float, rtol: float, norm: float
) -> bool:
    with torch.no_grad():
        plus = detector.scores(detector.predict(x + step * u))
        minus = detector.scores(detector.predict(x - step * u))
    numeric = float((plus - minus).sum()) / (2 * step)
    return abs(numeric - analytic) <= rtol * max(abs(numeric), abs(analytic)) + 5e-4 * norm


def detection_gradient_is_faithful(
    detector: Detector, images: Tensor, directions: int = 3, rtol: float = 0.1
) -> bool | None:
    """Whether the attacks' gradient is the gradient of the score the metrics rank.

    On the first of ``images``: along the gradient ``g`` of the detection objective and along
    ``directions - 1`` seeded random unit directions ``u``, the derivative ``g·u`` must match a
    central finite difference of the image score the metrics use,
    ``(s(x + h·u) − s(x − h·u)) / 2h`` within ``rtol`` at one of the L2 steps ``h`` in
    ``_STEPS`` (a proxy's error does not shrink with ``h``; a curved score's does). A
    detached, straight-through or proxy score fails; so does a score that does not reach the
    input. A detector whose forward pass is random (two passes differ) cannot be checked this
    way: ``None``.
    """
    detector = as_detector(detector)
    x = images[:1].detach().clone().float()
    x = x.to(next(detector.parameters(), x).device)
    with torch.no_grad():
        first = detector.scores(detector.predict(x))
        second = detector.scores(detector.predict(x))
    if not torch.allclose(first, second, rtol=1e-5, atol=1e-6):
        return None
    x.requires_grad_(True)
    try:
        zero = torch.zeros(1, device=x.device)
        value = detection_objective(detector, detector.predict(x), zero).sum()
        (grad,) = torch.autograd.grad(value, x)
    except RuntimeError:  # the objective does not reach the input: no gradient at all
        return False
    norm = grad.norm()
    if not torch.isfinite(norm) or norm == 0:
        return False
    gen = torch.Generator().manual_seed(0)
    units = [grad / norm] + [
        (r / r.norm()).to(x.device)
        for r in (torch.randn(x.shape, generator=gen) for _ in range(directions - 1))
    ]
    for u in units:
        analytic = float((grad * u).sum())
        if not any(_matches(detector, x, u, h, analytic, rtol, float(norm)) for h in _STEPS):
            return False
    return True


def adaptive_note(
    detector: Detector, images: Tensor | None = None, eot: bool | None = None
) -> dict[str, Any]:
    """What the attacks differentiate, for ``results["adaptive"]``.

    ``images``: test images to check on (:func:`detection_gradient_is_faithful`; without them
    the note says it was not checked). ``eot``: whether the attacks ran through
    :class:`EOTDetector` (default: whether ``detector`` is one).
    """
    detector = as_detector(detector)
    eot = isinstance(detector, EOTDetector) if eot is None else bool(eot)
    draws = detector.eot_draws if eot and isinstance(detector, EOTDetector) else None
    faithful = None if images is None else detection_gradient_is_faithful(detector, images)
    score_rule, map_rule = detector.rules()  # after a forward pass: adapters know their output
    differentiated = f"image score = {score_rule}; pixel map = {map_rule}"
    if draws:
        differentiated += f" (logits averaged over {draws} random forward passes: EOT)"
    verified = {
        True: "(gradient checked against finite differences of s on a test image)",
        False: "(NOT verified: its gradient disagrees with finite differences of s)",
        None: "(not checked: no test image, or a random forward pass)",
    }[faithful]
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
        "gradient_checked": faithful,
    }
    if faithful is False:
        note["warning"] = (
            "the gradient of the detection objective is not that of the detector's image score: "
            "the attacks may follow a proxy of the decision rule (a detached or straight-through "
            "score, or a non-differentiable step)"
        )
    return note
