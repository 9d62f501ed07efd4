"""Training-attack perturbations carried over from one epoch to the next.

A short PGD run (PGD-3) is far weaker than the PGD-10 of an audit, and a model hardened against the
weak attack stays brittle against the strong one. Every training image returns once per epoch, so
its last adversarial perturbation is a good start for its next attack: the steps accumulate across
epochs (the idea of ATTA, Zheng et al., CVPR 2020) and a PGD-3 run behaves like a much longer one
at no extra cost. :class:`PerturbationBank` keeps one perturbation per training image; an image
seen for the first time starts from the usual random point. Under ``torch.distributed`` every
process records what all processes attacked, so the banks stay identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pgaudit.runtime import distributed


class PerturbationBank:
    """One stored L∞ perturbation per training image (float16 on the CPU: 0.3 MB per 224-px image)."""

    def __init__(self, n_images: int, shape: Sequence[int]) -> None:
        self.delta = torch.zeros((n_images, *shape), dtype=torch.float16)
        self.seen = torch.zeros(n_images, dtype=torch.bool)

    def fill(self, start: Tensor, indices: Tensor, eps: float) -> Tensor:
        """``start`` (``[B,3,S,S]``, random starts) with the stored perturbation of each image
        of ``indices`` that has one, clipped to the current ``eps`` (it grows during warm-up)."""
        idx = indices.cpu().long()
        seen = self.seen[idx]
        if not seen.any():
            return start
        start = start.clone()
        stored = self.delta[idx[seen]].to(start.device, start.dtype).clamp(-eps, eps)
        start[seen.to(start.device)] = stored
        return start

    def record(self, indices: Tensor, adversarial: Tensor, clean: Tensor) -> None:
        """Store ``adversarial - clean`` for ``indices`` (gathered from every process)."""
        delta = (adversarial - clean).detach().to("cpu", torch.float16)
        pieces = distributed.all_gather((indices.cpu().long(), delta))
        for idx, d in pieces:
            self.delta[idx] = d
            self.seen[idx] = True

    def state_dict(self) -> dict[str, Tensor]:
        return {"delta": self.delta.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if tuple(state["delta"].shape) != tuple(self.delta.shape):
            raise ValueError(
                f"saved perturbations have shape {tuple(state['delta'].shape)}, "
                f"expected {tuple(self.delta.shape)}"
            )
        self.delta = state["delta"].to(torch.float16).clone()
        self.seen = state["seen"].to(torch.bool).clone()
