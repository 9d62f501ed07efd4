"""Run one attack on one batch of a detector, and re-score its images with our own forward pass.

Whatever library produced the adversarial images, their logits are recomputed here with a plain
fp32 forward pass of the detector, so reported numbers never come from the attack's own
bookkeeping, nor from its precision: the gradient passes may run in bf16/fp16 (``precision``),
the scores never do.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from pgaudit.attacks.algorithms import Attack, Restarts, make_attack
from pgaudit.attacks.objectives import objective_values
from pgaudit.attacks.suites import AttackSpec
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import Detector, DetectorOutput, fp32_output
from pgaudit.precision import crafting, judging

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
    """Runs attacks (:mod:`pgaudit.attacks.algorithms`) on batches of one (frozen, eval-mode)
    detector (a plain module or callable is wrapped by
    :func:`~pgaudit.models.adapters.as_detector`); ``input_shape`` and ``cells`` (logit-grid
    size) are needed by ART attacks only; ``precision`` (resolved: fp32, bf16 or fp16) is that
    of the attacks' gradient passes, never of the scores (:meth:`output` is fp32)."""

    def __init__(
        self,
        detector: Detector,
        *,
        input_shape: tuple[int, ...] | None = None,
        cells: int = 0,
        device: torch.device | str = "cpu",
        seed: int = 0,
        precision: str = "fp32",
    ) -> None:
        self.detector = as_detector(detector)
        self.device = torch.device(device)
        self.seed = seed
        self.precision = precision
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.cells = cells
        self._bridge: ArtBridge | None = None

    @property
    def bridge(self) -> ArtBridge:
        """The ART bridge (created, and ART imported, on first use)."""
        if self._bridge is None:
            from pgaudit.attacks.art_bridge import ArtBridge

            if self.input_shape is None:
                raise ValueError("ART attacks need the Attacker's input_shape (C, H, W)")
            self._bridge = ArtBridge(
                self.detector, input_shape=self.input_shape, cells=self.cells,
                device=self.device, precision=self.precision,
            )  # fmt: skip
        return self._bridge

    def output(self, images: Tensor) -> DetectorOutput:
        """Plain fp32 forward pass (no gradients): logits ``[B, h, w]`` and the detector's score."""
        with torch.no_grad(), judging(images.device):
            return self.detector.predict(images)

    def objective(self, spec: AttackSpec, output: DetectorOutput, target: BatchTarget) -> Tensor:
        return objective_values(
            self.detector,
            output,
            spec.objective,
            target.labels,
            target.grid_masks,
            target.threshold,
            spec.loss,
        )

    def objective_fn(self, spec: AttackSpec, target: BatchTarget) -> Callable[[Tensor], Tensor]:
        """``images -> [B]`` objective values of ``spec`` on a forward pass (with autograd), the
        forward in the crafting precision, the objective in fp32."""

        def fn(x: Tensor) -> Tensor:
            with crafting(self.precision, x.device):
                output = fp32_output(self.detector.predict(x))
            return self.objective(spec, output, target)

        return fn

    def run(
        self,
        attack: Attack | Restarts | AttackSpec,
        images: Tensor,
        target: BatchTarget,
        batch_index: int = 0,
    ) -> tuple[Tensor, DetectorOutput]:
        """Adversarial images for one batch and their output (recomputed by a plain forward).

        ``attack``: from :func:`~pgaudit.attacks.algorithms.make_attack` (a spec is made into
        one). PGD restarts (native and ART alike) are independent random starts, the best per
        image kept (:class:`~pgaudit.attacks.algorithms.Restarts`); AutoPGD and Square restart
        inside ART. The seed depends on (run seed, attack id, batch), not on the library.
        """
        if isinstance(attack, AttackSpec):
            attack = make_attack(attack)
        seed = batch_seed(self.seed, attack.spec.id, batch_index)
        # Native PGD draws its starts from this stream exactly as ART draws them from numpy's
        # global one (seeded alike below), so both libraries start from the same points.
        rng = np.random.RandomState(seed)
        with seeded_global_rngs(seed):
            adv = attack.perturb(self, images, target, rng).detach()
        return adv, self.output(adv)
