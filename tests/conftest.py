"""Shared test fixtures: an in-process CLI runner and small synthetic datasets."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import settings

torch.set_num_threads(2)

# Property tests draw the same examples on every run (a failure reproduces; CI cannot flake).
settings.register_profile("pgaudit", derandomize=True, database=None)
settings.load_profile("pgaudit")


@pytest.fixture(autouse=True)
def _seeded_global_rngs():
    """Every test starts from the same global torch/NumPy/random state, whatever ran before."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `pgaudit ARGS...` in-process through the real entry point; returns exit code and output."""
    from pgaudit.cli import main

    def _run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["pgaudit", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return _run


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic dataset (widget + fabric; 64 px, 24 train / 16 test), made once.

    Shared by the whole session: copy a category before changing it.
    """
    from pgaudit.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, size=64, seed=0, n_train=24, n_test=16)
    return root


@pytest.fixture(scope="session")
def synth_default(tmp_path_factory):
    """The default synthetic dataset (128 px, 80 train / 40 test per category), made once.

    Shared by the whole session: copy a category before changing it.
    """
    from pgaudit.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth_default")
    make_synthetic_dataset(root)
    return root
