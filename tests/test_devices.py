"""--device values: one rule for train, harden, attack and distributed workers."""

from __future__ import annotations

import pytest
import torch

from pgaudit.devices import resolve_device
from pgaudit.errors import ParameterError


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_unknown_device_names_the_parameter_and_the_cli_its_option():
    with pytest.raises(ParameterError, match="^device 'tpu' is not known") as info:
        resolve_device("tpu")
    assert info.value.for_cli().startswith("--device 'tpu' is not known")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(ParameterError, match="no CUDA GPU is available here; use device cpu") as e:
        resolve_device("cuda:0")
    assert e.value.for_cli() == "--device cuda:0: no CUDA GPU is available here; use --device cpu."
