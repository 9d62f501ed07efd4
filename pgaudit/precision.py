"""Numeric precision of the gradient passes: ``fp32``, ``bf16``, ``fp16`` (CUDA) or ``auto``.

The rule everywhere in pgaudit: **craft in low precision, judge in fp32**. Low precision may run
the passes that only steer an attack or a training step (:func:`crafting`: autocast), but every
score that enters a metric, a validation figure or a loss is computed in fp32 (:func:`judging`
and :func:`as_fp32`), so a precision change can only weaken an attack, never flatter a model.

``auto`` picks bf16 only where the hardware runs it natively (a CPU with AVX-512 BF16 or AMX, a
CUDA GPU with bf16); elsewhere bf16 is emulated and slower than fp32, so ``auto`` stays at fp32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from pgaudit.errors import ParameterError

#: What ``precision`` accepts; :func:`resolve_precision` turns ``auto`` into one of the others.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX); Linux ``/proc/cpuinfo``."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ParameterError naming it."""
    if precision not in PRECISIONS:
        raise ParameterError(
            f"precision {precision!r}: use one of {', '.join(PRECISIONS)}.", "precision"
        )
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to run on ``device``: ``fp32``, ``bf16`` or ``fp16`` (``auto`` decided).

    ``fp16`` needs a CUDA device (CPUs have no fast fp16 path); ``bf16`` on a CUDA GPU needs one
    that supports it.
    """
    check_precision(precision)
    device = torch.device(device)
    cuda = device.type == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ParameterError(
            f"precision fp16 runs on CUDA GPUs only, not on device {device}; use bf16 or fp32.",
            "precision",
            "device",
        )
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ParameterError(
            f"precision bf16: the GPU of device {device} has no bf16 support; use fp16 or fp32.",
            "precision",
            "device",
        )
    return precision


def crafting(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast for a pass that only steers (an attack's gradient, a training forward/backward).

    A no-op for ``fp32``; ``precision`` must be resolved (not ``auto``).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ValueError(f"crafting needs a resolved precision, not {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


@contextlib.contextmanager
def judging(device: torch.device | str) -> Iterator[None]:
    """fp32 inside, whatever autocast is active outside: for scores that enter a metric."""
    with torch.autocast(torch.device(device).type, enabled=False):
        yield


def as_fp32(tensor: Tensor) -> Tensor:
    """``tensor`` as float32 (a low-precision forward's output, before a loss or a score)."""
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def explicit_attention_preferred() -> bool:
    """Whether the explicit (matmul) attention path beats the fused kernel right now.

    Under CPU bf16 autocast the fused scaled-dot-product kernel's backward is slow (ViT-Tiny at
    128 px: forward+backward 0.89× the fp32 time fused, 0.56× explicit); in fp32 both paths cost
    the same, and on GPUs the fused kernel wins.
    """
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
