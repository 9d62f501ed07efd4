"""Run one attack spec on one batch: native torch or ART, restarts, and our own re-scoring.

Whatever library produced the adversarial images, their logits are recomputed here with a plain
forward pass of the detector, so reported numbers never come from the attack's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from pgaudit.attacks import native
from pgaudit.attacks.objectives import objective_values
from pgaudit.attacks.suites import AttackSpec
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import Detector, DetectorOutput

if TYPE_CHECKING:
    from pgaudit.attacks.art_bridge import ArtBridge


@dataclass
class BatchTarget:
    """What the objectives need to know about a batch: labels, grid masks, threshold."""

    labels: Tensor
    grid_masks: Tensor | None
    threshold: float = 0.0


def batch_seed(seed: int, spec_id: str, batch_index: int) -> int:
    """A seed per (run seed, attack, batch): adding an attack does not change the others."""
    return zlib.crc32(f"{seed}:{spec_id}:{batch_index}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed numpy's and Python's global RNGs (ART draws from them) and restore them afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class Attacker:
    """Runs :class:`AttackSpec` s on batches of one (frozen, eval-mode) detector (a plain module
    or callable is wrapped by :func:`~pgaudit.models.adapters.as_detector`)."""

    def __init__(
        self,
        detector: Detector,
        *,
        input_shape: tuple[int, ...],
        cells: int,
        device: torch.device | str,
        seed: int = 0,
    ) -> None:
        self.detector = as_detector(detector)
        self.device = torch.device(device)
        self.seed = seed
        self.input_shape = tuple(input_shape)
        self.cells = cells
        self._bridge: ArtBridge | None = None

    @property
    def bridge(self) -> ArtBridge:
        """The ART bridge (created, and ART imported, on first use)."""
        if self._bridge is None:
            from pgaudit.attacks.art_bridge import ArtBridge

            self._bridge = ArtBridge(
                self.detector, input_shape=self.input_shape, cells=self.cells, device=self.device
            )
        return self._bridge

    def output(self, images: Tensor) -> DetectorOutput:
        """Plain forward pass (no gradients): logits ``[B, h, w]`` and the detector's own score."""
        with torch.no_grad():
            return self.detector.predict(images)

    def objective(self, spec: AttackSpec, output: DetectorOutput, target: BatchTarget) -> Tensor:
        return objective_values(
            self.detector,
            output,
            spec.objective,
            target.labels,
            target.grid_masks,
            target.threshold,
        )

    def _one_run(
        self, spec: AttackSpec, images: Tensor, target: BatchTarget, rng: np.random.RandomState
    ) -> Tensor:
        if spec.library == "native":
            if spec.attack not in ("fgsm", "pgd"):
                raise ValueError(f"no native implementation of {spec.attack!r}")

            def fn(x: Tensor) -> Tensor:
                return self.objective(spec, self.detector.predict(x), target)

            fgsm = spec.attack == "fgsm"
            with torch.enable_grad():
                return native.pgd(
                    fn,
                    images,
                    eps=spec.eps,
                    norm=spec.norm,
                    steps=1 if fgsm else spec.steps,
                    step_size=spec.effective_step_size,
                    random_init=spec.random_init and not fgsm,
                    rng=rng,
                )
        with torch.enable_grad():
            return self.bridge.generate(
                spec, images, target.labels, target.grid_masks, target.threshold
            )

    def run(
        self, spec: AttackSpec, images: Tensor, target: BatchTarget, batch_index: int = 0
    ) -> tuple[Tensor, DetectorOutput]:
        """Adversarial images for one batch and their output (recomputed by a plain forward).

        PGD restarts (native and ART alike) are independent random starts; per image the one
        with the highest objective is kept (its logits and own image score alike). AutoPGD and
        Square handle restarts inside ART. The seed depends on (run seed, attack id, batch), not
        on the library.
        """
        seed = batch_seed(self.seed, spec.id, batch_index)
        # Native PGD draws its starts from this stream exactly as ART draws them from numpy's
        # global one (seeded alike below), so both libraries start from the same points.
        rng = np.random.RandomState(seed)
        runs = spec.restarts if spec.attack == "pgd" else 1
        best_x: Tensor | None = None
        best: DetectorOutput | None = None
        best_val: Tensor | None = None
        with seeded_global_rngs(seed):
            for _ in range(runs):
                adv = self._one_run(spec, images, target, rng).detach()
                out = self.output(adv)
                if best_x is None or best is None:
                    best_x, best = adv, out
                    if runs > 1:
                        best_val = self.objective(spec, out, target)
                    continue
                val = self.objective(spec, out, target)
                better = val > best_val
                best_x = torch.where(better.view(-1, 1, 1, 1), adv, best_x)
                best = _keep_better(better, out, best)
                best_val = torch.where(better, val, best_val)
        assert best_x is not None and best is not None
        return best_x, best


def _keep_better(better: Tensor, new: DetectorOutput, old: DetectorOutput) -> DetectorOutput:
    """Per image, ``new`` where ``better`` else ``old`` (logits and own image score alike)."""
    logits = torch.where(better.view(-1, 1, 1), new.logits, old.logits)
    if new.image_score is None or old.image_score is None:
        return DetectorOutput(logits)
    return DetectorOutput(logits, torch.where(better, new.image_score, old.image_score))
