"""The top-level Python API: its docstring examples run, and it fails with errors that name things."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

import pgaudit
from pgaudit import api
from pgaudit.errors import PgauditError


def test_the_api_docstring_examples_run(tmp_path):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(api, globs={"tmp": tmp_path}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 6 and result.failed == 0


def test_the_api_is_reachable_from_the_package_without_importing_torch_up_front():
    code = "import sys, pgaudit; assert 'torch' not in sys.modules; print(pgaudit.audit.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pgaudit.api"
    assert pgaudit.load_detector is api.load_detector
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pgaudit.nope  # noqa: B018


def test_check_gate_names_a_bad_criterion():
    with pytest.raises(PgauditError, match="unknown criterion 'min_robust'"):
        api.check_gate({}, min_robust=0.5)
    with pytest.raises(PgauditError, match="not both"):
        api.check_gate({}, {"min_robust_auroc": 0.5}, metric="aupro")


def test_harden_takes_what_the_cli_takes_and_names_a_wrong_model(tmp_path):
    from torch import nn

    with pytest.raises(PgauditError, match="model: got a Linear"):
        api.harden(nn.Linear(1, 1), tmp_path)
    with pytest.raises(PgauditError, match="is a folder"):
        api.harden(str(tmp_path), tmp_path)  # the resolver's own error, as on the CLI
