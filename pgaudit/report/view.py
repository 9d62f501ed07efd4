"""An :class:`~pgaudit.results.AuditResults` → the plain view model the HTML template renders
(formatting, redaction, charts).

Everything here is pure data shaping: the template only loops and prints. Text is left raw
(the template autoescapes it); only the SVG charts are markup, escaped by :mod:`.svg`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from markupsafe import Markup

from pgaudit.errors import PgauditError
from pgaudit.gate import GateCriteria, evaluate_gate
from pgaudit.report import svg
from pgaudit.report.images import Thumbnail, thumbnail
from pgaudit.results import AttackSettings, AuditResults, MetricValue, Section

METRIC_LABELS = {
    "image_auroc": "Image AUROC",
    "pixel_auroc": "Pixel AUROC",
    "aupro": "AUPRO",
    "image_f1_max": "Image F1-max",
    "pixel_f1_max": "Pixel F1-max",
}
HEADLINE_METRICS = ("image_auroc", "pixel_auroc", "aupro")
TABLE_METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
CHART_METRICS = ("image_auroc", "pixel_auroc", "aupro")
NORM_LABELS = {"inf": "L∞", "linf": "L∞", "2": "L2", "l2": "L2", "1": "L1", "l1": "L1"}
GALLERY_FIELDS = (
    ("clean", "Clean image"),
    ("adversarial", "Adversarial image"),
    ("perturbation", "Perturbation (amplified)"),
    ("ground_truth", "Ground truth"),
    ("clean_map", "Clean map"),
    ("adversarial_map", "Adversarial map"),
)
META_LABELS = {
    "pgaudit_version": "pgaudit", "python": "Python", "torch": "PyTorch", "art": "ART",
    "timm": "timm", "numpy": "NumPy", "seconds": "Total time", "device": "Device",
    "precision": "Attack precision (scores fp32)",
}  # fmt: skip
#: At most this many gallery rows per audit are embedded (keeps the report small).
MAX_GALLERY_ROWS = 12

# An absolute path inside free text: "/…", "~/…", "C:\…" not preceded by a word char, ".", ":"
# "<" or a slash (so "8/255", "./x", "runs/x", "</b>" and "https://…" are left alone).
_ABS_PATH = re.compile(r"(?<![\w.:/\\~<-])(?:~[\\/]|[A-Za-z]:[\\/]|[\\/])[^\s'\"<>|=,;]+")


# ----------------------------------------------------------------------------- formatting


def redact_paths(value: Any) -> Any:
    """Replace absolute paths in every string of ``value`` (recursively) by their base names."""
    if isinstance(value, str):
        return _ABS_PATH.sub(_basename_of_match, value)
    if isinstance(value, Mapping):
        return {k: redact_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(v) for v in value]
    return value


def _basename_of_match(m: re.Match[str]) -> str:
    parts = [p for p in re.split(r"[\\/]", m.group(0)) if p and p != "~"]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]
    return parts[-1] if parts else "…"


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def fmt_seconds(s: Any) -> str:
    """Human duration: ``0.84 s``, ``12.3 s``, ``3 min 20 s``, ``1 h 05 min``."""
    v = _num(s)
    if v is None:
        return "—"
    if v < 10:
        return f"{v:.2f} s"
    if v < 60:
        return f"{v:.1f} s"
    if v < 3600:
        return f"{int(v // 60)} min {int(v % 60):02d} s"
    return f"{int(v // 3600)} h {int(v % 3600 // 60):02d} min"


def fmt_number(x: Any) -> str:
    """Compact number for settings tables (step sizes, eps)."""
    v = _num(x)
    if v is None:
        return "—" if x is None else str(x)
    if v == int(v) and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.4g}"


def fmt_eps(eps: Any, label: Any = None) -> str:
    """ε as recorded (``8/255``) or as a number."""
    if isinstance(label, str) and label:
        return label
    return fmt_number(eps)


class Notes:
    """Numbered footnotes for undefined metrics (one number per distinct reason)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, reason: str) -> int:
        if reason not in self.items:
            self.items.append(reason)
        return self.items.index(reason) + 1


@dataclass
class Cell:
    """A formatted metric value: ``text`` is ``n/a`` (with ``reason`` + footnote) when undefined."""

    text: str
    value: float | None = None
    ci: str | None = None
    reason: str | None = None
    note: int | None = None

    @property
    def na(self) -> bool:
        return self.value is None


def cell(entry: MetricValue | None, notes: Notes, percent: bool = False) -> Cell:
    """Format one metric (``n/a`` with its reason as a footnote when undefined or missing)."""
    if entry is None or entry.value is None:
        why = entry.reason if entry is not None and entry.reason else "not computed for this audit"
        return Cell("n/a", None, None, why, notes.add(why))

    def f(v: float) -> str:
        return f"{100 * v:.1f} %" if percent else f"{v:.3f}"

    ci_text = f"[{f(entry.ci[0])}, {f(entry.ci[1])}]" if entry.ci is not None else None
    return Cell(f(entry.value), entry.value, ci_text)


def _dict(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def norm_label(norm: Any) -> str:
    return NORM_LABELS.get(str(norm).lower(), f"L{norm}") if norm is not None else "—"


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mapping → ``[("a.b", "value"), …]`` for key/value tables."""
    rows: list[tuple[str, str]] = []
    for k, v in _dict(d).items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            rows.extend(flatten(v, key + "."))
        elif isinstance(v, list | tuple):
            rows.append((key, ", ".join(fmt_number(x) for x in v) if v else "—"))
        elif isinstance(v, bool):
            rows.append((key, "yes" if v else "no"))
        else:
            rows.append((key, "—" if v is None else fmt_number(v)))
    return rows


# ----------------------------------------------------------------------------- gate


@dataclass
class GateCheck:
    label: str
    value: Cell
    op: str
    threshold: str
    passed: bool
    note: str = ""


@dataclass
class GateView:
    status: str  # "pass" | "fail" | "none"
    source: str
    checks: list[GateCheck] = field(default_factory=list)
    error: str = ""  # why the gate could not be evaluated (counts as a failure, as in CI)

    @property
    def n_failed(self) -> int:
        return sum(1 for c in self.checks if not c.passed)


def _has_threshold(criteria: GateCriteria | Mapping[str, Any] | None) -> bool:
    """Whether a ``[gate]`` table or ``GateCriteria`` sets at least one threshold."""
    if isinstance(criteria, GateCriteria):
        return criteria.min_robust_auroc is not None or criteria.min_clean_auroc is not None
    return criteria is not None and any(
        criteria.get(k) is not None for k in ("min_robust_auroc", "min_clean_auroc")
    )


def gate_view(
    results: AuditResults, criteria: GateCriteria | Mapping[str, Any] | None, notes: Notes
) -> GateView:
    """The verdict of :func:`pgaudit.gate.evaluate_gate` for ``criteria`` (a ``[gate]`` table or
    ``GateCriteria``); without them, for the ``gate`` table of results.json; else no verdict."""
    if _has_threshold(criteria):
        source = "pgaudit.toml [gate] or the caller"
    elif results.gate is not None:
        source = "results.json"
        try:
            criteria = GateCriteria.from_mapping(results.gate)
        except PgauditError as exc:
            return GateView("fail", source, error=f"results.json {exc}")
        if not _has_threshold(criteria):
            return GateView("none", "no gate thresholds set")
    else:
        return GateView("none", "no gate thresholds set")
    assert criteria is not None
    try:
        if not isinstance(criteria, GateCriteria):
            criteria = GateCriteria.from_mapping(criteria)
        # A report has no baseline: it shows the absolute criteria (max_drop is the gate's).
        outcome = evaluate_gate(results, replace(criteria, max_drop=None, significant_only=False))
    except PgauditError as exc:
        return GateView("fail", source, error=str(exc))
    checks = []
    for c in outcome.criteria:
        label = c.name
        for k, v in METRIC_LABELS.items():
            label = label.replace(k, v)
        checks.append(
            GateCheck(
                label=label,
                value=cell(MetricValue(c.value), notes),
                op=c.op.replace(">=", "≥").replace("<=", "≤"),
                threshold=f"{c.threshold:.3f}",
                passed=c.passed,
                note=c.message,
            )
        )
    return GateView("pass" if outcome.passed else "fail", source, checks)


# ----------------------------------------------------------------------------- audit view


@dataclass
class AuditView:
    """Everything the template shows for one audit."""

    key: str
    label: str
    dir_label: str
    created: str
    model: dict[str, Any]
    data: dict[str, Any]
    suite: dict[str, Any]
    headline_eps: str
    robust_attacks: list[str]
    headline: list[dict[str, Any]]
    gate: GateView
    attacks: list[dict[str, Any]]
    threshold: str
    operating_point: list[dict[str, Any]]
    gallery: list[dict[str, Any]]
    gallery_omitted: int
    sanity: list[dict[str, Any]]
    adaptive: list[tuple[str, str]]
    meta: list[tuple[str, str]]
    command: str
    warnings: list[str]
    parity: dict[str, Any] | None = None


def variant_label(run: AttackSettings, with_library: bool = False) -> str:
    """``PGD-10``, ``APGD-100 ×5``, ``FGSM (art)`` …"""
    name = (run.attack or "attack").upper()
    if run.steps > 1:
        name += f"-{run.steps}"
    if run.restarts > 1:
        name += f" ×{run.restarts}"
    if with_library and run.library:
        name += f" ({run.library})"
    return name


def _delta(clean: Cell, robust: Cell) -> dict[str, str]:
    if clean.value is None or robust.value is None:
        return {"text": "—", "cls": ""}
    d = robust.value - clean.value
    cls = "bad" if d <= -0.2 else "warn" if d <= -0.05 else "good"
    return {"text": f"{d:+.3f}".replace("-", "−"), "cls": cls}


def _rate(entry: MetricValue | None) -> float | None:
    v = None if entry is None else entry.value
    return None if v is None else min(max(v, 0.0), 1.0)


def _op_row(
    label: str, objective: str, eps: str, section: Section, notes: Notes, cls: str
) -> dict[str, Any]:
    """One row of the operating-point table."""
    miss, fa = (section.operating_point.get(k) for k in ("miss_rate", "false_alarm_rate"))
    return {
        "label": label, "objective": objective, "eps": eps,
        "miss": cell(miss, notes, percent=True), "miss_bar": _rate(miss),
        "fa": cell(fa, notes, percent=True), "fa_bar": _rate(fa), "cls": cls,
    }  # fmt: skip


def _short(fp: str) -> str:
    return (fp[:19] + "…") if len(fp) > 20 else (fp or "—")


def build_audit(
    results: AuditResults,
    shown: AuditResults,
    audit_dir: Path,
    key: str,
    notes: Notes,
    *,
    include_paths: bool,
    gate_criteria: GateCriteria | Mapping[str, Any] | None,
    with_library: bool,
) -> AuditView:
    """One audit's view: text comes from ``shown`` (``results`` with paths redacted unless
    ``include_paths``); gallery files are read via the raw ``results``."""
    model, data, meta = shown.model, shown.data, shown.meta
    clean, robust = shown.clean, shown.robust
    warnings: list[str] = []

    headline = []
    for m in TABLE_METRICS:
        if m not in clean.metrics and m not in robust.metrics:
            continue
        c, r = cell(clean.metric(m), notes), cell(robust.metric(m), notes)
        headline.append(
            {"metric": METRIC_LABELS[m], "key": m, "clean": c, "robust": r,
             "delta": _delta(c, r), "primary": m in HEADLINE_METRICS}
        )  # fmt: skip

    runs = sorted(shown.attacks, key=lambda a: (a.objective, a.attack, a.eps))
    attacks = []
    op_rows = [_op_row("Clean (no attack)", "—", "0", clean, notes, "clean")]
    for a in runs:
        name, eps = variant_label(a, with_library), fmt_eps(a.eps, a.eps_label)
        attacks.append(
            {"id": a.id or "—", "name": name, "library": a.library or "—",
             "norm": norm_label(a.norm), "eps": eps, "steps": fmt_number(a.steps),
             "step_size": fmt_number(a.step_size), "restarts": fmt_number(a.restarts),
             "objective": a.objective or "—",
             "metrics": [cell(a.metric(m), notes) for m in TABLE_METRICS],
             "miss": cell(a.operating_point.get("miss_rate"), notes, percent=True),
             "fa": cell(a.operating_point.get("false_alarm_rate"), notes, percent=True),
             "seconds": fmt_seconds(a.seconds), "notes": a.notes or ""}
        )  # fmt: skip
        op_rows.append(_op_row(name, a.objective or "—", eps, a, notes, ""))
    if robust.operating_point:
        eps = fmt_eps(robust.eps, robust.eps_label)
        op_rows.append(_op_row("Worst case", "any", eps, robust, notes, "worst"))

    # gallery: names from the redacted copy, files from the raw results
    gallery = []
    for raw, disp in zip(results.gallery[:MAX_GALLERY_ROWS], shown.gallery, strict=False):
        thumbs: list[dict[str, Any]] = []
        for fld, caption in GALLERY_FIELDS:
            rel = raw.get(fld)
            th = thumbnail(audit_dir, rel) if isinstance(rel, str) else Thumbnail(None, None)
            if th.problem and th.problem.startswith("refused"):
                warnings.append(f"gallery image {disp.get(fld)!s} was not embedded: {th.problem}.")
            thumbs.append({"caption": caption, "uri": th.uri, "problem": th.problem or "none"})
        label = _num(disp.get("label"))
        gallery.append(
            {"name": str(disp.get("name") or "—"),
             "label": "anomalous" if label == 1 else "normal" if label == 0 else "—",
             "attack_id": str(disp.get("attack_id") or ""), "thumbs": thumbs}
        )  # fmt: skip

    severity = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
    sanity = [
        {"name": s.name, "status": s.status, "evidence": s.evidence, "meaning": s.meaning}
        for s in sorted(shown.sanity, key=lambda s: severity[s.status])
    ]

    fp = str(model.get("fingerprint") or "")
    model_view = {
        "name": str(model.get("name") or model.get("spec") or "unnamed model"),
        "kind": str(model.get("kind") or "—"),
        "preset": str(model.get("preset") or "—"),
        "spec": str(model.get("spec") or "—"),
        "fingerprint": fp or "—",
        "fingerprint_short": _short(fp),
        "config": flatten(model.get("config")),
        "training": flatten(model.get("training")),
    }
    dfp = str(data.get("fingerprint") or "")
    defect_types = [(str(k), fmt_number(v)) for k, v in _dict(data.get("defect_types")).items()]
    skip = {"defect_types", "fingerprint", "name"}
    data_view = {
        "name": str(data.get("name") or data.get("category") or "—"),
        "fields": [(k.replace("_", " ").capitalize(), v) for k, v in flatten(
            {k: v for k, v in data.items() if k not in skip})],
        "defect_types": defect_types,
        "fingerprint": dfp or "—",
        "fingerprint_short": _short(dfp),
    }  # fmt: skip
    suite_view = {
        "name": shown.suite.name or "—",
        "description": shown.suite.description,
        "n_attacks": len(runs),
    }
    meta_rows = [
        (META_LABELS.get(k, k.replace("_", " ").capitalize()),
         fmt_seconds(meta.get(k)) if k == "seconds" else v)
        for k, v in flatten({k: v for k, v in meta.items() if k != "command"})
    ]  # fmt: skip
    thr = results.clean.threshold
    name = model_view["name"]
    return AuditView(
        key=key,
        label=name,
        dir_label=str(audit_dir.resolve()) if include_paths else audit_dir.resolve().name,
        created=str(shown.created or meta.get("started") or ""),
        model=model_view,
        data=data_view,
        suite=suite_view,
        headline_eps=fmt_eps(shown.headline_eps, shown.headline_eps_label),
        robust_attacks=list(robust.attack_ids),
        headline=headline,
        gate=gate_view(results, gate_criteria, notes),
        attacks=attacks,
        threshold=f"{thr:.4g}" if thr is not None else "n/a",
        operating_point=op_rows,
        gallery=gallery,
        gallery_omitted=max(len(results.gallery) - MAX_GALLERY_ROWS, 0),
        sanity=sanity,
        adaptive=[(k.replace("_", " ").capitalize(), v) for k, v in flatten(shown.adaptive)],
        meta=meta_rows,
        command=str(meta.get("command") or ""),
        warnings=warnings,
        parity=parity_view(shown.parity),
    )


def _gap(value: Any) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:.2e}"


def _auroc_text(value: Any) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:.3f}"


def parity_view(parity: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The parity section of an export's audit (results.json ``parity``) as table rows."""
    if not parity:
        return None
    rows = []
    for label, key in (("image score", "score"), ("pixel map", "pixel_map")):
        entry = _dict(parity.get(key))
        if entry:
            rho = _num(entry.get("rank_correlation"))
            rows.append({
                "output": label, "max_gap": _gap(entry.get("max_gap")),
                "median_gap": _gap(entry.get("median_gap")),
                "source": _auroc_text(entry.get("source_auroc")),
                "exported": _auroc_text(entry.get("exported_auroc")),
                "rho": "" if rho is None else f"{rho:.4f}",
            })  # fmt: skip
    robust = [
        {"attack": str(r.get("attack", "")), "source": _auroc_text(r.get("source_image_auroc")),
         "exported": _auroc_text(r.get("exported_image_auroc"))}
        for r in (_dict(x) for x in parity.get("robust") or [])
    ]  # fmt: skip
    return {
        "source": str(parity.get("source", "")), "images": parity.get("images"),
        "worst_gap": _gap(parity.get("worst_gap")), "rows": rows, "robust": robust,
    }  # fmt: skip


# ----------------------------------------------------------------------------- charts


@dataclass
class ChartGroup:
    title: str
    charts: list[Markup]
    note: str = ""


def build_charts(
    audits: Sequence[tuple[AuditView, AuditResults]], with_library: bool
) -> list[ChartGroup]:
    """Metric-vs-ε charts: one group per (norm, objective), one chart per metric, one curve per
    attack variant (and per model when comparing); ε = 0 is the clean value."""
    compare = len(audits) > 1
    keys: list[tuple[str, str]] = []
    variants: list[str] = []
    for _, res in audits:
        for a in res.attacks:
            if (a.norm, a.objective) not in keys:
                keys.append((a.norm, a.objective))
            if variant_label(a, with_library) not in variants:
                variants.append(variant_label(a, with_library))
    groups = []
    for norm, objective in keys:
        charts: list[Markup] = []
        undefined: list[str] = []
        for metric in CHART_METRICS:
            series: list[svg.Series] = []
            ticks: dict[float, str] = {0.0: "0"}
            any_value = False
            for ai, (view, res) in enumerate(audits):
                clean_entry = res.clean.metric(metric)
                runs = [a for a in res.attacks if (a.norm, a.objective) == (norm, objective)]
                for vi, vname in enumerate(variants):
                    vr = [a for a in runs if variant_label(a, with_library) == vname]
                    if not vr:
                        continue
                    label = f"{view.label} · {vname}" if compare else vname
                    pts = [_point(0.0, clean_entry, f"{label} · clean")]
                    if _value(clean_entry) is None:
                        undefined.append(f"{METRIC_LABELS[metric]} ({_reason(clean_entry)})")
                    for a in vr:
                        entry = a.metric(metric)
                        eps = fmt_eps(a.eps, a.eps_label)
                        ticks.setdefault(a.eps, eps)
                        pts.append(_point(a.eps, entry, f"{label} · ε={eps}"))
                        if _value(entry) is None:
                            undefined.append(f"{METRIC_LABELS[metric]} ({_reason(entry)})")
                    any_value = any_value or any(p.y is not None for p in pts)
                    series.append(
                        svg.Series(
                            label,
                            pts,
                            color=svg.PALETTE[(ai if compare else vi) % len(svg.PALETTE)],
                            dash=svg.DASHES[(vi if compare else 0) % len(svg.DASHES)],
                        )
                    )
            if not any_value:
                continue
            charts.append(
                Markup(
                    svg.line_chart(
                        series,
                        title=METRIC_LABELS[metric],
                        x_label=f"ε ({norm_label(norm)})",
                        y_label=METRIC_LABELS[metric],
                        x_ticks=sorted(ticks.items()),
                        reference=(0.5, "chance") if "auroc" in metric else None,
                    )
                )
            )
        note = ""
        if undefined:
            note = "Points left out (n/a): " + "; ".join(dict.fromkeys(undefined)) + "."
        if charts:
            groups.append(
                ChartGroup(f"{objective.capitalize()} objective · {norm_label(norm)}", charts, note)
            )
    return groups


def _value(entry: MetricValue | None) -> float | None:
    return None if entry is None else entry.value


def _point(x: float, entry: MetricValue | None, label: str) -> svg.Point:
    ci = None if entry is None else entry.ci
    return svg.Point(x, _value(entry), ci, f"{label}: {_tip(entry)}")


def _tip(entry: MetricValue | None) -> str:
    v = _value(entry)
    if entry is None or v is None:
        return f"n/a ({_reason(entry)})"
    ci = entry.ci
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _reason(entry: MetricValue | None) -> str:
    return entry.reason if entry is not None and entry.reason else "not computed"
