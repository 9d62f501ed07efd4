"""Experiment tracking with MLflow (the optional extra ``pgaudit[mlflow]``).

``--mlflow`` on ``train`` / ``harden`` / ``attack`` (or ``enabled = true`` in the ``[mlflow]``
table of pgaudit.toml) logs one MLflow run per command:

* an audit: parameters (model, data, suite, ε, seed, device, precision), the clean and robust
  metrics and each attack's, and results.json, scores.npz and report.html as artifacts;
* a whole root's audit: each category's clean/robust metrics and their means, summary.json;
* a hardening run: the recipe as parameters, the per-epoch log as metrics (``step`` = epoch:
  loss, its parts and the held-out validation scores) and the log file as an artifact.

Where to: ``tracking_uri`` of ``[mlflow]``, else MLflow's own choice (``MLFLOW_TRACKING_URI``,
else its default local store, a SQLite ``mlflow.db`` in the working folder); the experiment is
``experiment`` of ``[mlflow]`` (default ``pgaudit``). MLflow's telemetry is switched off unless
the environment already says otherwise (``MLFLOW_DISABLE_TELEMETRY``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pgaudit import __version__
from pgaudit.dataset_summary import METRICS, DatasetSummary
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.results import AuditResults

KEYS = ("enabled", "experiment", "tracking_uri")
NEEDS = "MLflow tracking needs the mlflow package: pip install 'pgaudit[mlflow]'."


@dataclass(frozen=True)
class TrackingConfig:
    """Whether and where to log (see the module docstring)."""

    enabled: bool = False
    experiment: str = "pgaudit"
    tracking_uri: str | None = None

    @classmethod
    def resolve(cls, config: Mapping[str, Any] | None, enabled: bool | None) -> TrackingConfig:
        """From the ``[mlflow]`` table of the project config, ``enabled`` (the flag) winning."""
        table = dict((config or {}).get("mlflow") or {})
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise PgauditError(
                f"[mlflow] has unknown key(s) {', '.join(unknown)}: the keys are {', '.join(KEYS)}."
            )
        for key, kind in (("enabled", bool), ("experiment", str), ("tracking_uri", str)):
            if key in table and not isinstance(table[key], kind):
                raise PgauditError(f"[mlflow] {key} must be a {kind.__name__}.")
        on = enabled if enabled is not None else table.get("enabled", False)
        return cls(on, table.get("experiment", "pgaudit"), table.get("tracking_uri"))


def from_project(enabled: bool | None) -> TrackingConfig:
    """The tracking settings of the project (pgaudit.toml) with the ``--mlflow`` flag; checks that
    MLflow is installed when tracking is on (before any work starts)."""
    from pgaudit.config import load_project_config

    config = TrackingConfig.resolve(load_project_config(), enabled)
    if config.enabled:
        check_available()
    return config


def _mlflow() -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError:
        raise PgauditError(NEEDS) from None
    return mlflow


def check_available() -> None:
    """Refuse ``--mlflow`` before any work when MLflow is not installed."""
    _mlflow()


def _start(config: TrackingConfig, run_name: str, kind: str) -> Any:
    mlflow = _mlflow()
    if config.tracking_uri:
        mlflow.set_tracking_uri(config.tracking_uri)
    try:
        mlflow.set_experiment(config.experiment)
    except Exception as exc:  # MLflow raises its own exception types for a bad store or name
        raise ParameterError(
            f"mlflow experiment {config.experiment!r} at {mlflow.get_tracking_uri()} cannot be "
            f"used ({exc}); check tracking_uri and experiment in [mlflow].",
            "mlflow",
        ) from None
    return mlflow.start_run(run_name=run_name, tags={"pgaudit.kind": kind,
                                                    "pgaudit.version": __version__})  # fmt: skip


def _params(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in values.items() if v is not None}


def _defined(section: Any, prefix: str) -> dict[str, float]:
    out = {}
    for name in METRICS:
        entry = section.metric(name)
        if entry is not None and entry.value is not None:
            out[f"{prefix}{name}"] = float(entry.value)
    return out


def log_audit(audit_dir: str | Path, results: AuditResults, config: TrackingConfig) -> str:
    """Log one audit as an MLflow run; returns its run id."""
    mlflow, audit_dir = _mlflow(), Path(audit_dir)
    model, data, meta = dict(results.model), dict(results.data), dict(results.meta)
    name = f"attack {model.get('name', 'model')} on {data.get('name', 'data')}"
    with _start(config, name, "audit") as run:
        mlflow.log_params(_params({
            "model": model.get("spec"), "model_kind": model.get("kind"),
            "model_name": model.get("name"), "preset": model.get("preset"),
            "data": data.get("name"), "n_test": data.get("n_test"), "suite": results.suite.name,
            "eps": results.headline_eps_label, "seed": meta.get("seed"),
            "device": meta.get("device"), "precision": meta.get("precision"),
        }))  # fmt: skip
        metrics = {**_defined(results.clean, "clean."), **_defined(results.robust, "robust.")}
        for attack in results.attacks:
            metrics |= _defined(attack, f"attack.{attack.id}.")
        mlflow.log_metrics(metrics)
        for file in ("results.json", "scores.npz", "report.html"):
            if (audit_dir / file).is_file():
                mlflow.log_artifact(str(audit_dir / file))
        return str(run.info.run_id)


def log_summary(summary: DatasetSummary, path: str | Path, config: TrackingConfig) -> str:
    """Log a whole root's audit (summary.json) as one run: per-category metrics and the means."""
    mlflow = _mlflow()
    with _start(config, f"attack {summary.root} ({len(summary.categories)} categories)",
                "dataset-audit") as run:  # fmt: skip
        mlflow.log_params(_params({"root": summary.root, "suite": summary.suite,
                                   "eps": summary.headline_eps_label,
                                   "categories": len(summary.categories)}))  # fmt: skip
        metrics = {}
        for scope in ("clean", "robust"):
            for m in METRICS:
                mean = summary.mean(scope, m)
                if mean.value is not None:
                    metrics[f"mean.{scope}.{m}"] = mean.value
                for c in summary.categories:
                    if (v := c.metric(scope, m)) is not None and v.value is not None:
                        metrics[f"{c.name}.{scope}.{m}"] = v.value
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(path))
        return str(run.info.run_id)


def log_training(result: Any, config: TrackingConfig) -> str:
    """Log a hardening run (:class:`~pgaudit.training.loop.HardenResult`): recipe, epochs, log."""
    mlflow = _mlflow()
    where = result.checkpoint.name if result.checkpoint is not None else "in memory"
    with _start(config, f"harden -> {where}", "training") as run:
        mlflow.log_params(_params({**asdict(result.train_config), "device": result.device,
                                   "workers": result.workers, "foreground": result.foreground,
                                   "checkpoint": result.checkpoint}))  # fmt: skip
        for record in result.history:
            values = {k: float(v) for k, v in record.items()
                      if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
            mlflow.log_metrics(values, step=int(record["epoch"]))
        if result.validation:
            mlflow.log_dict(json.loads(json.dumps(result.validation, default=str)),
                            "validation.json")  # fmt: skip
        if result.log is not None and Path(result.log).is_file():
            mlflow.log_artifact(str(result.log))
        return str(run.info.run_id)
