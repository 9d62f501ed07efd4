"""summary.json (schema ``pgaudit.summary/1``): a whole dataset's audit, one row per category.

Written by ``pgaudit attack MODELS ROOT --all-categories`` beside the per-category audit folders::

    {
      "schema": "pgaudit.summary/1",
      "root": "data/mvtec", "suite": "quick", "headline_eps_label": "8/255",
      "categories": [
        {"name": "bottle", "status": "ok", "audit": "bottle", "error": null,
         "n_test": 40, "clean": {<metric>: MetricValue}, "robust": {<metric>: MetricValue}},
        {"name": "cable", "status": "failed", "audit": null, "error": "…", …}
      ],
      "mean":  {"clean": {<metric>: MetricValue}, "robust": {…}},   # over the "ok" categories
      "worst": {"clean": {<metric>: {"value": …, "category": "…"}}, "robust": {…}}
    }

A mean is None (with a reason) when the metric is undefined in any category or a category failed:
a dataset's mean never silently leaves a category out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgaudit.errors import PgauditError
from pgaudit.results import AuditResults, MetricValue

SUMMARY_SCHEMA = "pgaudit.summary/1"
SUMMARY_FILE = "summary.json"
METRICS = ("image_auroc", "pixel_auroc", "aupro")
SCOPES = ("clean", "robust")


@dataclass(frozen=True)
class CategoryEntry:
    """One category's row: its audit folder (relative to the summary) and its metrics."""

    name: str
    status: str  # "ok" or "failed"
    audit: str | None = None
    error: str | None = None
    n_test: int | None = None
    metrics: Mapping[str, Mapping[str, MetricValue]] = field(default_factory=dict)

    def metric(self, scope: str, name: str) -> MetricValue | None:
        return self.metrics.get(scope, {}).get(name)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "status": self.status, "audit": self.audit, "error": self.error,
            "n_test": self.n_test,
        }  # fmt: skip
        for scope in SCOPES:
            out[scope] = {k: m.to_json() for k, m in self.metrics.get(scope, {}).items()}
        return out


@dataclass(frozen=True)
class DatasetSummary:
    """A whole summary.json; ``folder`` is where it lives (the audits are below it)."""

    root: str
    suite: str
    categories: tuple[CategoryEntry, ...]
    headline_eps_label: str | None = None
    folder: Path | None = None

    @property
    def failed(self) -> list[CategoryEntry]:
        return [c for c in self.categories if c.status != "ok"]

    def mean(self, scope: str, name: str) -> MetricValue:
        """The mean over the categories, undefined (with a reason) unless every one has it."""
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            return MetricValue(None, None, f"categories failed: {names}")
        values = [c.metric(scope, name) for c in self.categories]
        missing = [c.name for c, v in zip(self.categories, values, strict=True)
                   if v is None or v.value is None]  # fmt: skip
        if missing or not values:
            return MetricValue(None, None, f"undefined in {', '.join(missing) or 'no category'}")
        return MetricValue(sum(v.value for v in values) / len(values))  # type: ignore[misc]

    def worst(self, scope: str, name: str) -> tuple[CategoryEntry, float] | None:
        """The category with the lowest defined value, or None."""
        rows = [(c, v.value) for c in self.categories
                if (v := c.metric(scope, name)) is not None and v.value is not None]  # fmt: skip
        return min(rows, key=lambda r: r[1]) if rows else None

    def audit_folder(self, entry: CategoryEntry) -> Path | None:
        if entry.audit is None or self.folder is None:
            return None
        return self.folder / entry.audit

    def to_json(self) -> dict[str, Any]:
        mean = {s: {m: self.mean(s, m).to_json() for m in METRICS} for s in SCOPES}
        worst: dict[str, Any] = {s: {} for s in SCOPES}
        for s in SCOPES:
            for m in METRICS:
                found = self.worst(s, m)
                worst[s][m] = (
                    {"value": found[1], "category": found[0].name} if found is not None else None
                )
        return {
            "schema": SUMMARY_SCHEMA, "root": self.root, "suite": self.suite,
            "headline_eps_label": self.headline_eps_label,
            "categories": [c.to_json() for c in self.categories], "mean": mean, "worst": worst,
        }  # fmt: skip


def entry_from_results(name: str, audit: str, results: AuditResults) -> CategoryEntry:
    """The summary row of one category's audit."""
    metrics: dict[str, dict[str, MetricValue]] = {}
    for scope, section in (("clean", results.clean), ("robust", results.robust)):
        metrics[scope] = {m: v for m in METRICS if (v := section.metric(m)) is not None}
    n_test = (results.data or {}).get("n_test")
    return CategoryEntry(name, "ok", audit, None, n_test, metrics)


def summarize(
    root: str, suite: str, entries: Sequence[CategoryEntry], headline_eps_label: str | None
) -> DatasetSummary:
    return DatasetSummary(root, suite, tuple(entries), headline_eps_label)


def write_summary(summary: DatasetSummary, folder: Path) -> Path:
    """Write ``folder/summary.json`` (atomically: a failed write keeps the previous file)."""
    path = folder / SUMMARY_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(summary.to_json(), indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise PgauditError(f"{path}: cannot write the summary ({exc.strerror}).") from None
    return path


def is_summary(path: str | Path) -> bool:
    """Whether ``path`` is a summary.json or a folder holding one (and no results.json)."""
    path = Path(path)
    if path.is_dir():
        return (path / SUMMARY_FILE).is_file() and not (path / "results.json").is_file()
    return path.name == SUMMARY_FILE


def _metric(data: Any, where: str) -> MetricValue:
    if not isinstance(data, Mapping) or "value" not in data:
        raise PgauditError(f"{where}: not a metric entry; re-run `pgaudit attack`.")
    value = data["value"]
    if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
        raise PgauditError(f"{where}: value {value!r} is not a number; re-run `pgaudit attack`.")
    ci = data.get("ci")
    return MetricValue(
        float(value) if value is not None else None,
        (float(ci[0]), float(ci[1])) if isinstance(ci, list | tuple) and len(ci) == 2 else None,
        data.get("reason"),
    )


def read_summary(path: str | Path) -> DatasetSummary:
    """Read and check a summary.json (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PgauditError(
            f"{path} does not exist: pass the folder `pgaudit attack --all-categories` wrote."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PgauditError(f"{path} cannot be read ({exc}); re-run `pgaudit attack`.") from None
    if not isinstance(data, dict) or data.get("schema") != SUMMARY_SCHEMA:
        raise PgauditError(f"{path} is not a pgaudit summary ({SUMMARY_SCHEMA}).")
    entries = []
    try:
        for i, row in enumerate(data["categories"]):
            where = f"{path} categories[{i}]"
            metrics = {
                s: {m: _metric(v, f"{where}.{s}.{m}") for m, v in dict(row.get(s) or {}).items()}
                for s in SCOPES
            }
            entries.append(CategoryEntry(
                str(row["name"]), str(row["status"]), row.get("audit"), row.get("error"),
                row.get("n_test"), metrics,
            ))  # fmt: skip
        return DatasetSummary(
            str(data["root"]), str(data["suite"]), tuple(entries),
            data.get("headline_eps_label"), path.parent,
        )  # fmt: skip
    except (KeyError, TypeError, AttributeError) as exc:
        raise PgauditError(f"{path}: incomplete ({exc}); re-run `pgaudit attack`.") from None
