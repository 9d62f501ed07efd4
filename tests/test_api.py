"""The top-level Python API: its docstring examples run, and it fails with errors that name things."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

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


def test_api_errors_name_parameters_and_the_cli_words_them_as_options():
    from pgaudit.errors import ParameterError

    error = ParameterError("resume needs out: the run's checkpoint is out there.", "resume", "out")
    assert str(error) == "resume needs out: the run's checkpoint is out there."
    assert error.for_cli() == "--resume needs --out: the run's checkpoint is out there."
    assert error.for_cli({"out": "-o"}) == "--resume needs -o: the run's checkpoint is out there."
    with pytest.raises(ParameterError, match=r"^max_images 0 must be at least 1\.$"):
        api.check_audit_options(max_images=0)
    with pytest.raises(ParameterError, match=r"^min_clean_auroc 2\.0: a threshold"):
        api.check_gate({}, min_clean_auroc=2.0)


def test_a_parameter_named_twice_rewrites_two_mentions_but_never_inside_a_path():
    from pgaudit.errors import ParameterError

    error = ParameterError(
        "resume: /runs/resume/out.pt does not exist; drop resume or pick another out.",
        "resume", "resume", "out",
    )  # fmt: skip
    assert error.parameters == ("resume", "out")
    assert error.for_cli() == (
        "--resume: /runs/resume/out.pt does not exist; drop --resume or pick another --out."
    )


def _pickled_module(tmp_path):
    import torch

    from tests.test_attacks import ToyDetector

    torch.save(ToyDetector(), tmp_path / "m.pt")
    return pgaudit.load_detector(str(tmp_path / "m.pt"))


def _cuda_here(tmp_path):
    from pgaudit.devices import resolve_device

    return resolve_device("cuda:7")


def _unknown_suite(tmp_path):
    from pgaudit.attacks.suites import build_suite

    return build_suite("fast")


@pytest.mark.parametrize(
    ("call", "cli_words"),
    [
        (_pickled_module, "pass --trust-pickle only if"),
        (_cuda_here, "--device cuda:7: no CUDA GPU is available here; use --device cpu."),
        (_unknown_suite, "--suite 'fast' is unknown"),
    ],
)
def test_library_errors_name_parameters_not_flags(call, cli_words, tmp_path, monkeypatch):
    """The API never words an error with a CLI flag; the CLI's wording comes from for_cli."""
    from pgaudit.errors import ParameterError

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ParameterError) as info:
        call(tmp_path)
    assert "--" not in str(info.value)
    assert cli_words in info.value.for_cli()


def test_the_python_api_example_runs_end_to_end(tmp_path):
    """examples/python_api.py itself, as a user runs it (its --fast sizes): every step writes its
    files and the three summary lines come out."""
    example = Path(__file__).resolve().parents[1] / "examples" / "python_api.py"
    proc = subprocess.run(
        [sys.executable, str(example), str(tmp_path), "--fast"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if "image AUROC clean" in ln]
    assert len(lines) == 3, proc.stdout
    assert lines[2].startswith("mydetector (hardened)") and "robust" in lines[2]
    for name in ("audit-patchcore", "audit-mine", "audit-mine-hardened"):
        assert (tmp_path / name / "results.json").is_file(), name
    import torch

    hardened = torch.load(tmp_path / "mydetector_hardened.pt", weights_only=True)
    assert "head.weight" in hardened  # the example detector's weights, saved for reloading
    recorded = json.loads((tmp_path / "audit-mine-hardened" / "results.json").read_text())
    assert recorded["model"]["name"] == "mydetector (hardened)"


def test_recipe_changes_are_what_the_train_options_ask_for():
    from dataclasses import replace

    from pgaudit.models.presets import get_preset

    changes = api.recipe_changes(eps="4/255", clean=True, no_reg=True, carry=False, epochs=3,
                                 lr=None)  # fmt: skip
    assert changes == {"eps": pytest.approx(4 / 255), "adversarial": False, "regularise": False,
                       "carry_perturbations": False, "epochs": 3}  # fmt: skip
    assert api.recipe_changes() == {"adversarial": True}  # None / unset: the recipe's own values
    with pytest.raises(PgauditError, match="eps"):
        api.recipe_changes(eps="-1")
    recipe = replace(get_preset("tiny").train, **changes)  # they are TrainConfig fields
    assert (recipe.epochs, recipe.adversarial, recipe.regularise) == (3, False, False)
