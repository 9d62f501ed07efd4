"""results.json → the plain view model the HTML template renders (formatting, redaction, charts).

Everything here is pure data shaping: the template only loops and prints. Text is left raw
(the template autoescapes it); only the SVG charts are markup, escaped by :mod:`.svg`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from pgaudit.errors import PgauditError
from pgaudit.gate import evaluate_gate
from pgaudit.report import svg
from pgaudit.report.images import Thumbnail, thumbnail

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


def cell(entry: Any, notes: Notes, percent: bool = False) -> Cell:
    """Format one MetricEntry (``{"value", "ci", "reason"}``); a bare number is accepted too."""
    if isinstance(entry, Mapping):
        value, ci, reason = _num(entry.get("value")), entry.get("ci"), entry.get("reason")
    else:
        value, ci, reason = _num(entry), None, None
    if value is None:
        why = str(reason) if reason else "not computed for this audit"
        return Cell("n/a", None, None, why, notes.add(why))

    def f(v: float) -> str:
        return f"{100 * v:.1f} %" if percent else f"{v:.3f}"

    ci_text = None
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(_num(c) is not None for c in ci):
        ci_text = f"[{f(float(ci[0]))}, {f(float(ci[1]))}]"
    return Cell(f(value), value, ci_text)


def _ci_tuple(entry: Any) -> tuple[float, float] | None:
    ci = entry.get("ci") if isinstance(entry, Mapping) else None
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(_num(c) is not None for c in ci):
        return float(ci[0]), float(ci[1])
    return None


def _value(entry: Any) -> float | None:
    return _num(entry.get("value")) if isinstance(entry, Mapping) else _num(entry)


def _metrics(block: Any) -> Mapping[str, Any]:
    m = block.get("metrics") if isinstance(block, Mapping) else None
    return m if isinstance(m, Mapping) else {}


def _dict(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, list | tuple) else []


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
    passed: bool | None
    note: str = ""


@dataclass
class GateView:
    status: str  # "pass" | "fail" | "none"
    source: str
    checks: list[GateCheck] = field(default_factory=list)
    error: str = ""  # why the gate could not be evaluated (counts as a failure, as in CI)

    @property
    def n_failed(self) -> int:
        return sum(1 for c in self.checks if c.passed is False)


_OUTCOME_KEYS = ("passed", "checks", "status", "verdict")


def _get(obj: Any, *names: str) -> Any:
    for n in names:
        if isinstance(obj, Mapping) and n in obj:
            return obj[n]
        if not isinstance(obj, Mapping) and hasattr(obj, n):
            return getattr(obj, n)
    return None


def _as_bool(x: Any) -> bool | None:
    if isinstance(x, bool):
        return x
    if isinstance(x, str) and x.lower() in ("pass", "passed", "ok", "fail", "failed"):
        return x.lower() in ("pass", "passed", "ok")
    return None


def _has_threshold(criteria: Any) -> bool:
    """Whether a ``[gate]`` table or ``GateCriteria`` sets at least one threshold."""
    return criteria is not None and any(
        _get(criteria, k) is not None for k in ("min_robust_auroc", "min_clean_auroc")
    )


def gate_view(results: Mapping[str, Any], criteria: Any, notes: Notes) -> GateView:
    """The verdict of :func:`pgaudit.gate.evaluate_gate` for ``criteria`` (a ``[gate]`` table or
    ``GateCriteria``); without them, the ``gate`` block of results.json (its thresholds are
    re-evaluated; a recorded outcome is shown as is); else no verdict."""
    recorded = results.get("gate")
    if _has_threshold(criteria):
        source = "pgaudit.toml [gate] or the caller"
    elif isinstance(recorded, Mapping) and recorded:
        source = "results.json"
        table = recorded.get("criteria")
        if isinstance(table, Mapping):
            criteria = table
        elif not any(k in recorded for k in _OUTCOME_KEYS) and "criteria" not in recorded:
            criteria = recorded
        else:
            return _outcome_view(recorded, source, notes)
        if not _has_threshold(criteria):
            return GateView("none", "no gate thresholds set")
    else:
        return GateView("none", "no gate thresholds set")
    try:
        outcome = evaluate_gate(results, criteria)
    except PgauditError as exc:
        return GateView("fail", source, error=str(exc))
    return _outcome_view(outcome, source, notes)


def _outcome_view(outcome: Any, source: str, notes: Notes) -> GateView:
    """A GateOutcome (or its recorded dict form) → GateView."""
    checks: list[GateCheck] = []
    for c in _list(_get(outcome, "criteria", "checks")):
        metric = str(_get(c, "metric") or "")
        entry = {"value": _get(c, "value"), "reason": _get(c, "reason") or "not recorded"}
        label = str(_get(c, "name", "label") or metric or "criterion")
        for k, v in METRIC_LABELS.items():
            label = label.replace(k, v)
        op = str(_get(c, "op") or ">=").replace(">=", "≥").replace("<=", "≤")
        t = _num(_get(c, "threshold"))
        checks.append(
            GateCheck(
                label=label,
                value=cell(entry, notes),
                op=op,
                threshold=f"{t:.3f}" if t is not None else "—",
                passed=_as_bool(_get(c, "passed", "status")),
                note=str(_get(c, "message") or ""),
            )
        )
    passed = _as_bool(_get(outcome, "passed", "status", "verdict"))
    if passed is None:
        passed = bool(checks) and all(c.passed is True for c in checks)
    return GateView("pass" if passed else "fail", source, checks)


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
    meta: list[tuple[str, str]]
    command: str
    warnings: list[str]


def variant_label(run: Mapping[str, Any], with_library: bool = False) -> str:
    """``PGD-10``, ``APGD-100 ×5``, ``FGSM (art)`` …"""
    name = str(run.get("attack") or "attack").upper()
    steps = _num(run.get("steps"))
    if steps is not None and steps > 1:
        name += f"-{int(steps)}"
    restarts = _num(run.get("restarts"))
    if restarts is not None and restarts > 1:
        name += f" ×{int(restarts)}"
    if with_library and run.get("library"):
        name += f" ({run['library']})"
    return name


def _delta(clean: Cell, robust: Cell) -> dict[str, str]:
    if clean.value is None or robust.value is None:
        return {"text": "—", "cls": ""}
    d = robust.value - clean.value
    cls = "bad" if d <= -0.2 else "warn" if d <= -0.05 else "good"
    return {"text": f"{d:+.3f}".replace("-", "−"), "cls": cls}


def _rate(entry: Any) -> float | None:
    v = _value(entry)
    return None if v is None else min(max(v, 0.0), 1.0)


def build_audit(
    results: Mapping[str, Any],
    shown: Mapping[str, Any],
    audit_dir: Path,
    key: str,
    notes: Notes,
    *,
    include_paths: bool,
    gate_criteria: Any,
    with_library: bool,
) -> AuditView:
    """One audit's view: text comes from ``shown`` (``results`` with paths redacted unless
    ``include_paths``); gallery files are read via the raw ``results``."""
    model, data, suite, meta = (_dict(shown.get(k)) for k in ("model", "data", "suite", "meta"))
    clean, robust = _dict(shown.get("clean")), _dict(shown.get("robust"))
    warnings: list[str] = []

    headline = []
    for m in TABLE_METRICS:
        if m not in _metrics(clean) and m not in _metrics(robust):
            continue
        c, r = cell(_metrics(clean).get(m), notes), cell(_metrics(robust).get(m), notes)
        headline.append(
            {"metric": METRIC_LABELS[m], "key": m, "clean": c, "robust": r,
             "delta": _delta(c, r), "primary": m in HEADLINE_METRICS}
        )  # fmt: skip

    runs = sorted(
        (_dict(a) for a in _list(shown.get("attacks"))),
        key=lambda a: (str(a.get("objective")), str(a.get("attack")), _num(a.get("eps")) or 0.0),
    )
    attacks, op_rows = [], []
    clean_op = _dict(clean.get("operating_point"))
    op_rows.append(
        {"label": "Clean (no attack)", "objective": "—", "eps": "0",
         "miss": cell(clean_op.get("miss_rate"), notes, percent=True),
         "miss_bar": _rate(clean_op.get("miss_rate")),
         "fa": cell(clean_op.get("false_alarm_rate"), notes, percent=True),
         "fa_bar": _rate(clean_op.get("false_alarm_rate")), "cls": "clean"}
    )  # fmt: skip
    for a in runs:
        op = _dict(a.get("operating_point"))
        attacks.append(
            {"id": str(a.get("id") or "—"), "name": variant_label(a, with_library),
             "library": str(a.get("library") or "—"), "norm": norm_label(a.get("norm")),
             "eps": fmt_eps(a.get("eps"), a.get("eps_label")), "steps": fmt_number(a.get("steps")),
             "step_size": fmt_number(a.get("step_size")),
             "restarts": fmt_number(a.get("restarts")),
             "objective": str(a.get("objective") or "—"),
             "metrics": [cell(_metrics(a).get(m), notes) for m in TABLE_METRICS],
             "miss": cell(op.get("miss_rate"), notes, percent=True),
             "fa": cell(op.get("false_alarm_rate"), notes, percent=True),
             "seconds": fmt_seconds(a.get("seconds")), "notes": str(a.get("notes") or "")}
        )  # fmt: skip
        op_rows.append(
            {"label": variant_label(a, with_library), "objective": str(a.get("objective") or "—"),
             "eps": fmt_eps(a.get("eps"), a.get("eps_label")),
             "miss": cell(op.get("miss_rate"), notes, percent=True),
             "miss_bar": _rate(op.get("miss_rate")),
             "fa": cell(op.get("false_alarm_rate"), notes, percent=True),
             "fa_bar": _rate(op.get("false_alarm_rate")), "cls": ""}
        )  # fmt: skip
    robust_op = _dict(robust.get("operating_point"))
    if robust_op:
        op_rows.append(
            {"label": "Worst case", "objective": "any",
             "eps": fmt_eps(robust.get("eps"), robust.get("eps_label")),
             "miss": cell(robust_op.get("miss_rate"), notes, percent=True),
             "miss_bar": _rate(robust_op.get("miss_rate")),
             "fa": cell(robust_op.get("false_alarm_rate"), notes, percent=True),
             "fa_bar": _rate(robust_op.get("false_alarm_rate")), "cls": "worst"}
        )  # fmt: skip
    thr = _num(clean.get("threshold"))

    # gallery: names from the redacted copy, files from the raw results
    raw_gallery = _list(results.get("gallery"))
    shown_gallery = _list(shown.get("gallery"))
    gallery = []
    for raw, disp in zip(raw_gallery[:MAX_GALLERY_ROWS], shown_gallery, strict=False):
        raw, disp = _dict(raw), _dict(disp)
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

    sanity: list[dict[str, Any]] = []
    for s in _list(shown.get("sanity")):
        s = _dict(s)
        status = str(s.get("status") or "skip").lower()
        sanity.append(
            {"name": str(s.get("name") or "check"),
             "status": status if status in ("pass", "warn", "fail", "skip") else "skip",
             "evidence": str(s.get("evidence") or ""), "meaning": str(s.get("meaning") or "")}
        )  # fmt: skip
    severity = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
    sanity.sort(key=lambda s: severity[s["status"]])

    fp = str(model.get("fingerprint") or "")
    model_view = {
        "name": str(model.get("name") or model.get("spec") or "unnamed model"),
        "kind": str(model.get("kind") or "—"),
        "preset": str(model.get("preset") or "—"),
        "spec": str(model.get("spec") or "—"),
        "fingerprint": fp or "—",
        "fingerprint_short": (fp[:19] + "…") if len(fp) > 20 else (fp or "—"),
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
        "fingerprint_short": (dfp[:19] + "…") if len(dfp) > 20 else (dfp or "—"),
    }  # fmt: skip
    suite_view = {
        "name": str(suite.get("name") or "—"),
        "description": str(suite.get("description") or ""),
        "n_attacks": len(runs),
    }
    meta_rows = [
        (META_LABELS.get(k, k.replace("_", " ").capitalize()),
         fmt_seconds(meta.get(k)) if k == "seconds" else v)
        for k, v in flatten({k: v for k, v in meta.items() if k != "command"})
    ]  # fmt: skip
    name = model_view["name"]
    return AuditView(
        key=key,
        label=name,
        dir_label=str(audit_dir.resolve()) if include_paths else audit_dir.resolve().name,
        created=str(shown.get("created") or meta.get("started") or ""),
        model=model_view,
        data=data_view,
        suite=suite_view,
        headline_eps=fmt_eps(shown.get("headline_eps"), shown.get("headline_eps_label")),
        robust_attacks=[str(x) for x in _list(robust.get("attack_ids"))],
        headline=headline,
        gate=gate_view(results, gate_criteria, notes),
        attacks=attacks,
        threshold=f"{thr:.4g}" if thr is not None else "n/a",
        operating_point=op_rows,
        gallery=gallery,
        gallery_omitted=max(len(raw_gallery) - MAX_GALLERY_ROWS, 0),
        sanity=sanity,
        meta=meta_rows,
        command=str(meta.get("command") or ""),
        warnings=warnings,
    )


# ----------------------------------------------------------------------------- charts


@dataclass
class ChartGroup:
    title: str
    charts: list[Markup]
    note: str = ""


def build_charts(
    audits: Sequence[tuple[AuditView, Mapping[str, Any]]], with_library: bool
) -> list[ChartGroup]:
    """Metric-vs-ε charts: one group per (norm, objective), one chart per metric, one curve per
    attack variant (and per model when comparing); ε = 0 is the clean value."""
    compare = len(audits) > 1
    shown = list(audits)
    keys: list[tuple[str, str]] = []
    variants: list[str] = []
    for _, res in shown:
        for a in _list(res.get("attacks")):
            a = _dict(a)
            k = (str(a.get("norm")), str(a.get("objective") or "—"))
            if k not in keys:
                keys.append(k)
            v = variant_label(a, with_library)
            if v not in variants:
                variants.append(v)
    groups = []
    for norm, objective in keys:
        charts: list[Markup] = []
        undefined: list[str] = []
        for metric in CHART_METRICS:
            series: list[svg.Series] = []
            ticks: dict[float, str] = {0.0: "0"}
            any_value = False
            for ai, (view, res) in enumerate(shown):
                clean_entry = _metrics(_dict(res.get("clean"))).get(metric)
                runs = [
                    _dict(a)
                    for a in _list(res.get("attacks"))
                    if str(_dict(a).get("norm")) == norm
                    and str(_dict(a).get("objective") or "—") == objective
                ]
                for vname in variants:
                    vr = [a for a in runs if variant_label(a, with_library) == vname]
                    if not vr:
                        continue
                    vi = variants.index(vname)
                    label = f"{view.label} · {vname}" if compare else vname
                    pts = [
                        svg.Point(0.0, _value(clean_entry), _ci_tuple(clean_entry),
                                  f"{label} · clean: {_tip(clean_entry)}")
                    ]  # fmt: skip
                    if _value(clean_entry) is None:
                        undefined.append(f"{METRIC_LABELS[metric]} ({_reason(clean_entry)})")
                    for a in vr:
                        eps = _num(a.get("eps"))
                        if eps is None:
                            continue
                        entry = _metrics(a).get(metric)
                        ticks.setdefault(eps, fmt_eps(eps, a.get("eps_label")))
                        pts.append(
                            svg.Point(eps, _value(entry), _ci_tuple(entry),
                                      f"{label} · ε={fmt_eps(eps, a.get('eps_label'))}: "
                                      f"{_tip(entry)}")
                        )  # fmt: skip
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


def _tip(entry: Any) -> str:
    v = _value(entry)
    if v is None:
        return f"n/a ({_reason(entry)})"
    ci = _ci_tuple(entry)
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _reason(entry: Any) -> str:
    r = entry.get("reason") if isinstance(entry, Mapping) else None
    return str(r) if r else "not computed"
