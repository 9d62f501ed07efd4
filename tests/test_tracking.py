"""`--mlflow`: runs logged to a real local MLflow store, read back with MLflow's own client.

MLflow is an optional extra: without it these tests are skipped, except where CI sets
PGAUDIT_REQUIRE_MLFLOW=1 (it installs the extra): there a missing MLflow fails them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from small_models import micro

REQUIRE = "PGAUDIT_REQUIRE_MLFLOW"
SIZE = 32

try:
    import mlflow  # noqa: F401

    HAVE_MLFLOW = True
except ImportError:  # pragma: no cover - the extra is not installed
    HAVE_MLFLOW = False


@pytest.fixture(autouse=True)
def _mlflow_present(monkeypatch) -> None:
    if not HAVE_MLFLOW:
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but mlflow is not installed", pytrace=False)
        pytest.skip("mlflow is not installed (pip install 'pgaudit[mlflow]')")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A 32 px category and an untrained micro PatchGuard; the working folder is tmp_path."""
    from pgaudit.data.synth import make_synthetic_dataset
    from pgaudit.models.checkpoint import save_checkpoint
    from pgaudit.models.patchguard import PatchGuard

    make_synthetic_dataset(tmp_path / "data", size=SIZE, n_train=8, n_test=8,
                           categories=("widget",))  # fmt: skip
    config = micro()
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "micro.pt", PatchGuard(config))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _client(folder: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def _runs(folder: Path, experiment: str = "pgaudit"):
    client = _client(folder)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return client, client.search_runs([found.experiment_id], order_by=["attributes.start_time"])


def test_hardening_and_audit_runs_land_in_the_default_local_store(project, run_cli):
    res = run_cli("harden", "micro.pt", "data/widget", "--out", "h.pt", "--device", "cpu",
                  "--workers", "0", "--mlflow")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    res = run_cli("attack", "h.pt", "data/widget", "--steps", "2", "--device", "cpu",
                  "--bootstrap", "0", "--quiet", "--report", "--mlflow")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert (project / "mlflow.db").is_file()  # MLflow's default store: ./mlflow.db
    client, (train, audit) = _runs(project)
    assert train.data.tags["pgaudit.kind"] == "training"
    assert train.data.params["epochs"] == "2" and train.data.params["steps"] == "2"
    history = client.get_metric_history(train.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    assert {a.path for a in client.list_artifacts(train.info.run_id)} >= {"h.log.jsonl"}

    import json

    results = json.loads((project / "audit/results.json").read_text())
    assert audit.data.tags["pgaudit.kind"] == "audit"
    assert audit.data.params["suite"] == "quick" and audit.data.params["model"] == "h.pt"
    robust = results["robust"]["metrics"]["image_auroc"]["value"]
    assert audit.data.metrics["robust.image_auroc"] == pytest.approx(robust)
    assert any(k.startswith("attack.pgd-") for k in audit.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(audit.info.run_id)}
    assert {"results.json", "scores.npz", "report.html"} <= artifacts
    assert f"mlflow run {audit.info.run_id}" in res.stdout


def test_the_project_config_picks_the_experiment_and_store(project, run_cli):
    (project / "pgaudit.toml").write_text(
        f'[mlflow]\nenabled = true\nexperiment = "line-7"\n'
        f'tracking_uri = "sqlite:///{project / "team.db"}"\n'
    )
    res = run_cli("harden", "micro.pt", "data/widget", "--out", "h.pt", "--device", "cpu",
                  "--workers", "0", "--epochs", "1")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert not (project / "mlflow.db").exists() and (project / "team.db").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'team.db'}")
    experiment = client.get_experiment_by_name("line-7")
    assert experiment is not None and len(client.search_runs([experiment.experiment_id])) == 1
    res = run_cli("harden", "micro.pt", "data/widget", "--out", "h2.pt", "--device", "cpu",
                  "--workers", "0", "--epochs", "1", "--no-mlflow")  # fmt: skip
    assert res.exit_code == 0 and len(client.search_runs([experiment.experiment_id])) == 1


def test_bad_tracking_settings_and_a_missing_mlflow_are_one_sentence(project, run_cli, monkeypatch):
    (project / "pgaudit.toml").write_text("[mlflow]\nenabeld = true\n")
    res = run_cli("attack", "micro.pt", "data/widget", "--device", "cpu", "--mlflow")
    assert res.exit_code == 2 and "[mlflow] has unknown key(s) enabeld" in res.stderr
    (project / "pgaudit.toml").unlink()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    res = run_cli("attack", "micro.pt", "data/widget", "--device", "cpu", "--mlflow")
    assert res.exit_code == 2
    assert "needs the mlflow package: pip install 'pgaudit[mlflow]'" in res.stderr
    assert not (project / "audit").exists()  # refused before any work
