"""An exponential moving average of a model's weights (Gowal et al. 2020: robust and cheap).

``decay`` is the long-run factor; early on the effective decay is ``min(decay, (1 + n) /
(10 + n))`` after ``n`` updates, so the average does not drag the random initial weights along
on short schedules. Floating-point parameters and buffers are averaged; integer buffers copied.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class WeightAverage:
    """EMA of ``model``'s state (kept on the model's device)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.state: dict[str, Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (after each optimizer step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            avg = self.state[key]
            if avg.is_floating_point():
                avg.mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                avg.copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "state": {k: v.cpu() for k, v in self.state.items()}}  # fmt: skip

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.decay, self.updates = float(saved["decay"]), int(saved["updates"])
        for key, value in saved["state"].items():
            self.state[key].copy_(value)
