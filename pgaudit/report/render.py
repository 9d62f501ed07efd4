"""Assemble the self-contained HTML audit report (one file: inline CSS, SVG, data-URI images).

The page loads nothing from the network, runs no script and works as an e-mail attachment.
Templates live in ``reports/templates/`` and ship in the wheel as ``pgaudit._templates``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from pgaudit import __version__
from pgaudit.dataset_summary import METRICS, DatasetSummary, is_summary, read_summary
from pgaudit.errors import PgauditError
from pgaudit.gate import GateCriteria
from pgaudit.report.view import (
    HEADLINE_METRICS,
    METRIC_LABELS,
    TABLE_METRICS,
    AuditView,
    Notes,
    build_audit,
    build_charts,
    cell,
    redact_paths,
)
from pgaudit.results import AuditResults, read_results

TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"


def _template_source(name: str) -> str:
    return files("pgaudit._templates").joinpath(name).read_text(encoding="utf-8")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def project_gate_criteria(cwd: Path | None = None) -> dict[str, Any] | None:
    """The ``[gate]`` table of the project's pgaudit.toml when it sets a threshold, else None."""
    from pgaudit.config import load_project_config

    gate = load_project_config(cwd).get("gate")
    if not isinstance(gate, Mapping):
        return None
    if gate.get("min_robust_auroc") is None and gate.get("min_clean_auroc") is None:
        return None
    return dict(gate)


def _dataset_rows(summary: DatasetSummary, views: list[AuditView], notes: Notes) -> dict[str, Any]:
    """The first page of a dataset report: one row per category (linked to its section), the
    mean over the categories and the worst category."""
    by_name = {v.label: v for v in views}
    rows = []
    for entry in summary.categories:
        view = by_name.get(entry.name)
        cells = [cell(entry.metric(s, m), notes) for m in METRICS for s in ("clean", "robust")]
        rows.append({"name": entry.name, "key": view.key if view else None, "cells": cells,
                     "error": entry.error, "n_test": entry.n_test})  # fmt: skip
    mean = [cell(summary.mean(s, m), notes) for m in METRICS for s in ("clean", "robust")]
    return {
        "rows": rows, "mean": mean, "metrics": [METRIC_LABELS[m] for m in METRICS],
        "root": Path(summary.root).name or summary.root, "suite": summary.suite,
        "eps": summary.headline_eps_label, "failed": [c.name for c in summary.failed],
    }  # fmt: skip


def _audit_paths(audits: Sequence[Path | str] | Path | str) -> list[tuple[Path, Path]]:
    """Each argument → (audit folder, results.json)."""
    items = [audits] if isinstance(audits, str | Path) else list(audits)
    if not items:
        raise PgauditError("no audit folder given: pass the folder written by `pgaudit attack`.")
    out = []
    for item in items:
        p = Path(item)
        out.append((p.parent, p) if p.is_file() else (p, p / "results.json"))
    return out


def build_html(
    audits: Sequence[Path | str] | Path | str,
    include_paths: bool = False,
    gate_criteria: GateCriteria | Mapping[str, Any] | None = None,
) -> str:
    """The report as an HTML string (see :func:`render_report`)."""
    summary = None
    if isinstance(audits, str | Path) and is_summary(audits):  # a whole root
        summary = read_summary(audits)
        audits = [summary.audit_folder(c) for c in summary.categories if c.status == "ok"]  # type: ignore[misc]
        if not audits:
            raise PgauditError(f"{summary.folder}: every category's audit failed; nothing to show.")
    loaded: list[tuple[Path, AuditResults, AuditResults]] = []
    for audit_dir, results_path in _audit_paths(audits):
        raw = read_results(results_path)
        shown = raw
        if not include_paths:
            shown = AuditResults.from_json(redact_paths(raw.to_json()), str(results_path))
        loaded.append((audit_dir, raw, shown))

    libraries = {a.library for _, raw, _ in loaded for a in raw.attacks if a.library}
    with_library = len(libraries) > 1
    notes = Notes()
    views: list[AuditView] = [
        build_audit(
            raw,
            shown,
            audit_dir,
            f"a{i}",
            notes,
            include_paths=include_paths,
            gate_criteria=gate_criteria,
            with_library=with_library,
        )
        for i, (audit_dir, raw, shown) in enumerate(loaded)
    ]
    if summary is not None:
        for v, (audit_dir, _, _) in zip(views, loaded, strict=True):
            v.label = audit_dir.name  # the category
    labels = [v.label for v in views]
    for v in views:
        if labels.count(v.label) > 1:
            v.label = f"{v.label} ({v.dir_label})"
    charts = build_charts([(v, shown) for v, (_, _, shown) in zip(views, loaded, strict=True)],
                          with_library)  # fmt: skip

    compare_rows = []
    if len(views) > 1 and summary is None:
        for m in TABLE_METRICS:
            if not any(h["key"] == m for v in views for h in v.headline):
                continue
            cells = []
            for v in views:
                row = next((h for h in v.headline if h["key"] == m), None)
                na = cell(None, notes) if row is None else None
                cells.append(
                    {"clean": row["clean"] if row else na, "robust": row["robust"] if row else na,
                     "delta": row["delta"] if row else {"text": "—", "cls": ""}}
                )  # fmt: skip
            compare_rows.append(
                {"metric": METRIC_LABELS[m], "cells": cells, "primary": m in HEADLINE_METRICS}
            )

    dataset = _dataset_rows(summary, views, notes) if summary is not None else None
    if dataset is not None:
        title = f"Robustness audit · {len(summary.categories)} categories of {dataset['root']}"  # type: ignore[union-attr]
    elif len(views) == 1:
        title = f"Robustness audit · {views[0].label} on {views[0].data['name']}"
    else:
        title = "Robustness comparison · " + " vs ".join(v.label for v in views)
    css = Markup(_template_source(STYLESHEET))  # our own file, not user data
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=title,
            css=css,
            audits=views,
            compare=len(views) > 1,
            compare_rows=compare_rows,
            dataset=dataset,
            charts=charts,
            notes=notes.items,
            version=__version__,
            include_paths=include_paths,
        )
    )


def render_report(
    audits: Sequence[Path | str] | Path | str,
    out: Path | str,
    include_paths: bool = False,
    gate_criteria: GateCriteria | Mapping[str, Any] | None = None,
) -> Path:
    """Write the HTML report of one audit folder (or several, compared side by side) to ``out``.

    ``audits``: audit folder(s) holding results.json (or the results.json files themselves); the
    first is the primary one. ``include_paths`` shows absolute local paths (hidden by default:
    only base names appear). ``gate_criteria`` (a :class:`pgaudit.gate.GateCriteria` or a table
    as in pgaudit.toml ``[gate]``) gives the pass/fail verdict via
    :func:`pgaudit.gate.evaluate_gate`; without it, the ``gate`` table recorded in results.json,
    if any; else the report shows no verdict.
    Returns the path written.
    """
    html = build_html(audits, include_paths=include_paths, gate_criteria=gate_criteria)
    out = Path(out)
    if out.is_dir():
        out = out / "report.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise PgauditError(
            f"{out}: cannot write the report ({exc.strerror}); choose another output path."
        ) from None
    return out
