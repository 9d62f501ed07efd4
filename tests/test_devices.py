"""--device values: one rule for train, harden, attack and distributed workers."""

from __future__ import annotations

import pytest
import torch

from pgaudit.devices import resolve_device
from pgaudit.errors import PgauditError


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_unknown_device_names_the_option():
    with pytest.raises(PgauditError, match="--device 'tpu' is not known"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(PgauditError, match="no CUDA device is available here; use --device cpu"):
        resolve_device("cuda:0")
