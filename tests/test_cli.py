"""The installed `pgaudit` console script: --version, usage errors (exit 2, no traceback), Ctrl-C.

These run the real script in a fresh process (not typer's CliRunner), importing this tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

import pgaudit

TREE = Path(pgaudit.__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "pgaudit"
if not SCRIPT.is_file():
    SCRIPT = Path(shutil.which("pgaudit") or SCRIPT)

needs_script = pytest.mark.skipif(not SCRIPT.is_file(), reason="no pgaudit script installed")


def _env() -> dict[str, str]:
    """The environment of a script run: this tree first on the path, one thread, unbuffered."""
    path = os.pathsep.join(p for p in (str(TREE), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }  # fmt: skip


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120
    )


@needs_script
def test_the_script_imports_this_tree(tmp_path):
    code = "import pgaudit; print(pgaudit.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert Path(done.stdout.strip()).resolve().parent == TREE / "pgaudit"


@needs_script
def test_version(tmp_path):
    done = _script("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pgaudit {pgaudit.__version__}"


@needs_script
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack", "--bogus"], "No such option: --bogus"),
        (["atack"], "No such command 'atack'"),
        (["gate"], "Missing argument"),
        (["attack", "m.pt", "data", "--seed"], "Option '--seed' requires an argument"),
        (["attack", "m.pt", "data", "--seed", "abc"], "Invalid value for '--seed'"),
        (["gate", "results.json", "--min-robust-auroc", "high"], "Invalid value"),
    ],
    ids=["option", "command", "argument", "no-value", "not-a-number", "not-a-float"],
)
def test_usage_errors_exit_2_with_the_usage_paragraph(tmp_path, args, message):
    done = _script(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert f"Error: {message}" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 4  # usage, hint, blank, error


def _interrupt(
    args: list[str], cwd: Path, started: Callable[[str], bool]
) -> subprocess.CompletedProcess[str]:
    """Start the script, wait until ``started(stdout so far)``, then Ctrl-C its process group (as
    a terminal does: the DataLoader workers get the signal too)."""
    stdout, stderr = cwd / "stdout.txt", cwd / "stderr.txt"
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(
            [str(SCRIPT), *args], cwd=cwd, env=_env(), stdout=out, stderr=err, text=True,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not started(stdout.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, stderr.read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, stdout.read_text(), stderr.read_text()
    )


@needs_script
def test_ctrl_c_exits_130_with_one_line(tmp_path):
    out = tmp_path / "big"
    args = ["data", "synth", str(out), "--size", "1024", "--n-train", "500"]
    done = _interrupt(args, tmp_path, lambda _: (out / "widget" / "train").is_dir())
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted"


@pytest.fixture(scope="module")
def tiny_category(tmp_path_factory) -> Path:
    from pgaudit.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny")
    return make_synthetic_dataset(root, size=32, n_train=4, n_test=4, categories=("widget",))[0]


@needs_script
@pytest.mark.parametrize("after_an_epoch", [False, True], ids=["at-once", "after-an-epoch"])
def test_ctrl_c_during_train_says_whether_resume_continues(tmp_path, tiny_category, after_an_epoch):
    ckpt = tmp_path / "run.pt"
    args = ["train", str(tiny_category), "--out", str(ckpt), "--epochs", "200", "--clean"]
    if after_an_epoch:  # the checkpoint is written after every epoch
        done = _interrupt([*args, "--device", "cpu"], tmp_path, lambda _: ckpt.is_file())
    else:  # as soon as the plan is printed, before the first epoch ends
        done = _interrupt([*args, "--device", "cpu"], tmp_path, lambda out: "recipe:" in out)
    assert done.returncode == 130, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    if ckpt.is_file() and not after_an_epoch:  # a loaded machine finished an epoch first
        assert last.startswith(f"interrupted: {ckpt} holds"), last
        pytest.skip("the first epoch finished before Ctrl-C arrived; the other case covers it")
    if after_an_epoch:
        assert (
            last == f"interrupted: {ckpt} holds the last finished epoch; add --resume to continue."
        )
    else:
        assert (
            last == f"interrupted before the first epoch finished; nothing new was saved to {ckpt}."
        )


@pytest.mark.parametrize("stop", [KeyboardInterrupt, typer.Abort], ids=["ctrl-c", "abort"])
def test_a_stopped_command_exits_130(run_cli, monkeypatch, tmp_path, stop):
    def stopped(*args, **kwargs):
        raise stop()

    monkeypatch.setattr("pgaudit.data.synth.make_synthetic_dataset", stopped)
    result = run_cli("data", "synth", tmp_path / "out")
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted"


def test_a_ctrl_c_that_cpython_swallows_still_stops_training(tmp_path, tiny_category):
    """Seen in CI: Ctrl-C landed in an at-fork hook while the DataLoader started its workers;
    CPython printed 'Exception ignored … KeyboardInterrupt' and training ran to its end (exit 0).
    The remembering handler records the interrupt, and the training loop raises it again."""
    import signal

    from pgaudit.api import plan_hardening
    from pgaudit.runtime.interrupts import raise_if_interrupted, remembering_ctrl_c

    with remembering_ctrl_c():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # swallowed, as CPython does in an at-fork hook
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
        plan = plan_hardening("patchguard", tiny_category, changes={"epochs": 1, "adversarial": False},
                              out=tmp_path / "run.pt", workers=0)  # fmt: skip
        with pytest.raises(KeyboardInterrupt):
            plan.run(device="cpu", progress=False)
    assert not (tmp_path / "run.pt").exists()
    raise_if_interrupted()  # outside the block: nothing pending
