"""Options accepted by the parser but wrong, and output paths of the wrong kind: exit 2 with one
sentence naming the option, before any work starts and without writing anything; the library
raises a ParameterError naming the parameter (pgaudit.checks)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from pgaudit import api
from pgaudit.attacks.algorithms import make_attack
from pgaudit.attacks.suites import AttackSpec, build_suite
from pgaudit.checks import check_out_file, check_out_folder
from pgaudit.data.synth import make_synthetic_dataset
from pgaudit.errors import ParameterError
from pgaudit.models.baselines import fit_baseline
from pgaudit.models.presets import TrainConfig

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture
def widget(synth_root, tmp_path, monkeypatch) -> Path:
    """A copy of the synthetic widget category; the working directory is an empty folder."""
    data = shutil.copytree(synth_root / "widget", tmp_path / "data" / "widget")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return data


def _written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _refused(result, message: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    text = result.stderr.replace("\n", "")
    assert text.startswith("error: ") and message in text, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one sentence, one line
    assert result.stdout == ""  # refused before any plan was printed or work started


# (command, extra options, the start of the message)
BAD_OPTIONS = [
    ("train", ["--lr", "nan"], "--lr nan must be a positive, finite number"),
    ("train", ["--lr", "inf"], "--lr inf must be a positive, finite number"),
    ("harden", ["--lr", "-inf"], "--lr -inf must be a positive, finite number"),
    ("train", ["--workers", "-1"], "--workers -1 must be at least 0"),
    ("train", ["--seed", "-1"], "--seed -1 must be 0 or more"),
    ("train", ["--eps", "300/255"], "--eps 300/255 is an L∞ budget on images in [0, 1]"),
    ("train", ["--trades-beta", "nan"], "--trades-beta nan must be a finite number"),
    ("attack", ["--seed", "-2"], "--seed -2 must be 0 or more"),
    ("attack", ["--eps", "300/255"], "--eps 300/255 is an L∞ budget on images in [0, 1]"),
    ("attack", ["--eps", "8/255,1"], "--eps 1 is an L∞ budget on images in [0, 1]"),
    ("synth", ["--seed", "-1"], "--seed -1 must be 0 or more"),
    ("autoencoder", ["--epochs", "0"], "--epochs 0 must be at least 1"),
    ("patchcore", ["--max-train", "0"], "--max-train 0 must be at least 1"),
    ("patchcore", ["--max-train", "-3"], "--max-train -3 must be at least 1"),
]


def _command(kind: str, data: Path) -> list[str]:
    return {
        "train": ["train", str(data)],
        "harden": ["harden", "patchguard", str(data)],
        "attack": ["attack", "model.pt", str(data)],
        "synth": ["data", "synth", "out"],
        "autoencoder": ["fit-baseline", "autoencoder", str(data), "--out", "ae.pt"],
        "patchcore": ["fit-baseline", "patchcore", str(data), "--out", "pc.pt"],
    }[kind]


@pytest.mark.parametrize(("kind", "options", "message"), BAD_OPTIONS)
def test_wrong_values_exit_2_before_any_work(widget, run_cli, kind, options, message):
    before = _written(widget.parent)
    result = run_cli(*_command(kind, widget), *options)
    _refused(result, message)
    assert _written(Path.cwd()) == [] and _written(widget.parent) == before


# --- output paths of the wrong kind


@pytest.mark.parametrize(
    ("kind", "made", "message"),
    [
        ("attack", "file", "is an existing file but must be a folder"),
        ("synth", "file", "is an existing file but must be a folder"),
        ("train", "folder", "is an existing folder but must be a file"),
        ("autoencoder", "folder", "is an existing folder but must be a file"),
        ("train", "inside-a-file", "is a file, not a folder; pick another location"),
    ],
)
def test_output_paths_of_the_wrong_kind(widget, run_cli, kind, made, message):
    out = Path.cwd() / "taken"
    if made == "folder":
        out.mkdir()
    else:
        out.write_text("not yours\n")
    target = out / "model.pt" if made == "inside-a-file" else out
    args = _command(kind, widget)
    if kind == "synth":
        args[-1] = str(target)
    else:
        args = [a for a in args if a not in ("--out", "ae.pt")] + ["--out", str(target)]
    result = run_cli(*args)
    _refused(result, message)
    assert str(target) in result.stderr.replace("\n", "")
    assert _written(Path.cwd()) == ["taken"]


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
@pytest.mark.parametrize("kind", ["attack", "train"])
def test_output_in_a_read_only_folder(widget, run_cli, kind):
    locked = Path.cwd() / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        args = _command(kind, widget) + ["--out", str(locked / "out")]
        _refused(run_cli(*args), f"the folder {locked} is not writable")
    finally:
        locked.chmod(0o755)


# --- the library raises ParameterError naming the parameter


def _parameters(call) -> tuple[str, ...]:
    with pytest.raises(ParameterError) as caught:
        call()
    return caught.value.parameters


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"lr": math.nan}, "lr"),
        ({"lr": math.inf}, "lr"),
        ({"eps": 300 / 255}, "eps"),
        ({"eps": 1.0}, "eps"),
        ({"trades_beta": math.nan}, "trades_beta"),
        ({"grad_clip": math.inf}, "grad_clip"),
    ],
)
def test_train_config_refuses_non_finite_and_huge_values(changes, name):
    assert _parameters(lambda: TrainConfig(**changes)) == (name,)


@pytest.mark.parametrize(
    ("options", "name"),
    [({"workers": -1}, "workers"), ({"seed": -1}, "seed"), ({"changes": {"lr": math.nan}}, "lr")],
)
def test_plan_hardening_checks_before_building(widget, options, name):
    assert _parameters(lambda: api.plan_hardening("patchguard", widget, **options)) == (name,)


def test_audit_refuses_a_negative_seed_and_a_huge_linf_budget(widget, tmp_path):
    plan = api.plan_audit
    out = tmp_path / "audit"
    assert _parameters(lambda: plan("model.pt", widget, out_dir=out, seed=-1)) == ("seed",)
    eps = {"eps": [300 / 255]}
    assert _parameters(lambda: plan("model.pt", widget, out_dir=out, suite_options=eps)) == ("eps",)
    assert _parameters(lambda: build_suite("quick", eps=[1.0])) == ("eps",)
    assert not out.exists()


def test_linf_budgets_stay_below_1_but_l2_may_exceed_it():
    # The suites' budgets are checked; an attack object may span the whole range (the
    # unbounded-budget sanity check runs L∞ at 1).
    assert _parameters(lambda: build_suite("standard", eps=[1.5])) == ("eps",)
    make_attack(AttackSpec("pgd", "native", "inf", 1.0, 10, "detection"))
    make_attack(AttackSpec("pgd", "art", "2", 3.0, 10, "detection"))  # an L2 budget of 3 is fine
    full = build_suite("full", image_size=224)
    assert any(a.norm == "2" and a.eps > 1 for a in full.attacks)


def test_synthetic_data_and_baselines_check_their_parameters(widget, tmp_path):
    assert _parameters(lambda: make_synthetic_dataset(tmp_path / "s", seed=-1)) == ("seed",)
    ae = tmp_path / "ae.pt"
    assert _parameters(lambda: fit_baseline("autoencoder", widget, ae, epochs=0)) == ("epochs",)
    for max_train in (0, -1):
        call = lambda m=max_train: fit_baseline("patchcore", widget, ae, max_train=m)  # noqa: E731
        assert _parameters(call) == ("max_train",)
    assert not (tmp_path / "s").exists() and not ae.exists()


def test_output_path_checks(tmp_path):
    file, folder = tmp_path / "file", tmp_path / "folder"
    file.write_text("x")
    folder.mkdir()
    assert _parameters(lambda: check_out_folder(file, "out_dir")) == ("out_dir",)
    assert _parameters(lambda: check_out_file(folder, "out")) == ("out",)
    assert _parameters(lambda: check_out_file(file / "deeper" / "x.pt", "out")) == ("out",)
    assert check_out_folder(folder / "new" / "audit") == folder / "new" / "audit"
    assert check_out_file(file) == file  # overwriting a file is the caller's business
    assert _parameters(lambda: api.audit(object(), folder, out_dir=file)) == ("out_dir",)
    if not ROOT:
        folder.chmod(0o555)
        try:
            assert _parameters(lambda: check_out_file(folder / "x.pt")) == ("out",)
            assert _parameters(lambda: check_out_folder(folder)) == ("out",)
        finally:
            folder.chmod(0o755)
