"""The one rule that turns a ``--device`` value into a torch device."""

from __future__ import annotations

import torch

from pgaudit.errors import PgauditError


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; a clear error for an unavailable choice."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PgauditError(f"--device {device!r} is not known: use auto, cpu, cuda or cuda:N.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PgauditError(
            f"--device {device}: no CUDA device is available here; use --device cpu."
        )
    return torch.device(device)
