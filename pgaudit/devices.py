"""The one rule that turns a ``--device`` value into a torch device."""

from __future__ import annotations

import torch

from pgaudit.errors import ParameterError

#: ``.format(device=...)``; name "device" twice in the ParameterError (both mentions).
NO_GPU = "device {device}: no CUDA GPU is available here; use device cpu."


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; a clear error for an unavailable choice."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ParameterError(
            f"device {device!r} is not known: use auto, cpu, cuda or cuda:N.", "device"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(NO_GPU.format(device=device), "device", "device")
    return torch.device(device)
