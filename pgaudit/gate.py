"""The CI gate: pass or fail an audit (results.json) against minimum clean and robust metrics.

Criteria: the robust (worst case over the attacks at the headline ε) and/or the clean value of one
metric (``image_auroc``, ``pixel_auroc`` or ``aupro``) must be at least a threshold; with
``use_lower_bound`` the lower end of the bootstrap 95 % CI is compared instead of the point value.
``max_parity_gap`` bounds an exported file's worst clean gap to the model it came from (the
``parity`` section of an audit with ``--surrogate``). With a baseline audit, ``max_drop`` bounds how far the robust value may fall below the
baseline's (:mod:`pgaudit.regression`; ``significant_only``: only a drop a paired bootstrap
confirms fails).
Thresholds come from the command line, else ``[gate]`` in pgaudit.toml (see :mod:`pgaudit.config`).
A metric that is missing or undefined in the results is a :class:`PgauditError` (exit 2), never
a silent pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from pgaudit.config import GATE_KEYS, GATE_METRICS, config_value
from pgaudit.dataset_summary import DatasetSummary
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.regression import Audit, Drop, check_drop, check_max_drop
from pgaudit.results import AuditResults, Section, read_results

DEFAULT_METRIC = "image_auroc"
NO_CRITERION = (
    "no criterion given: pass min_robust_auroc or set [gate] in pgaudit.toml (or compare with a "
    "baseline: max_drop)."
)


@dataclass(frozen=True)
class GateCriteria:
    """What the gate checks; a threshold of None means that criterion is off."""

    metric: str = DEFAULT_METRIC
    min_robust_auroc: float | None = None
    min_clean_auroc: float | None = None
    use_lower_bound: bool = False
    max_drop: float | None = None  # against a baseline audit: the largest robust drop allowed
    significant_only: bool = False  # ... and only a drop the paired bootstrap confirms fails
    max_parity_gap: float | None = None  # an export's largest clean gap to its source

    def __post_init__(self) -> None:
        check_max_drop(self.max_drop)
        if self.metric not in GATE_METRICS:
            raise ParameterError(
                f"metric {self.metric}: unknown gate metric; use one of {', '.join(GATE_METRICS)}.",
                "metric",
            )
        for name, value in (
            ("min_robust_auroc", self.min_robust_auroc),
            ("min_clean_auroc", self.min_clean_auroc),
            ("max_parity_gap", self.max_parity_gap),
        ):
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ParameterError(f"{name} {value}: a threshold must lie between 0 and 1.", name)

    @classmethod
    def resolve(
        cls,
        config: Mapping[str, Any] | None = None,
        *,
        metric: str | None = None,
        min_robust_auroc: float | None = None,
        min_clean_auroc: float | None = None,
        use_lower_bound: bool | None = None,
        max_drop: float | None = None,
        significant_only: bool | None = None,
        max_parity_gap: float | None = None,
    ) -> GateCriteria:
        """Criteria from command-line values (None: not given) over the project config."""
        config = dict(config or {})
        return cls(
            metric=config_value(config, "gate.metric", metric, DEFAULT_METRIC),
            min_robust_auroc=config_value(config, "gate.min_robust_auroc", min_robust_auroc),
            min_clean_auroc=config_value(config, "gate.min_clean_auroc", min_clean_auroc),
            use_lower_bound=config_value(config, "gate.use_lower_bound", use_lower_bound, False),
            max_drop=config_value(config, "gate.max_drop", max_drop),
            significant_only=config_value(config, "gate.significant_only", significant_only, False),
            max_parity_gap=config_value(config, "gate.max_parity_gap", max_parity_gap),
        )

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> GateCriteria:
        """Criteria from a ``[gate]`` table (keys as in pgaudit.toml)."""
        unknown = sorted(set(table) - set(GATE_KEYS))
        if unknown:
            raise PgauditError(
                f"gate criteria: unknown key(s) {', '.join(unknown)}; the keys are "
                f"{', '.join(GATE_KEYS)}."
            )
        return cls.resolve({"gate": dict(table)})


@dataclass(frozen=True)
class CriterionResult:
    """One checked criterion. ``value`` is the compared number (the CI lower bound if asked)."""

    name: str
    scope: str
    metric: str
    passed: bool
    value: float
    threshold: float
    message: str
    op: str = ">="


@dataclass(frozen=True)
class GateOutcome:
    """All checked criteria, in order (robust first)."""

    criteria: list[CriterionResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    @property
    def failures(self) -> list[CriterionResult]:
        return [c for c in self.criteria if not c.passed]


def _fmt(value: float, threshold: float) -> tuple[str, str]:
    """Three decimals, more where rounding would make different numbers look equal."""
    for digits in (3, 6, 12):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if (a == b) == (value == threshold):
            return a, b
    return repr(value), repr(threshold)


def _robust_context(results: AuditResults) -> str:
    robust = results.robust
    ids = robust.attack_ids
    eps = robust.eps_label or results.headline_eps_label
    if eps is None and robust.eps is not None:
        eps = f"{robust.eps:.4g}"
    over = f"worst case over {len(ids)} attack{'s' if len(ids) != 1 else ''}"
    return f"{over} at eps {eps}" if eps else over


def _check(
    results: AuditResults,
    scope: str,
    threshold: float,
    criteria: GateCriteria,
    source: str,
) -> CriterionResult:
    metric = criteria.metric
    section: Section = results.robust if scope == "robust" else results.clean
    entry = section.metric(metric)
    if entry is None:
        raise ParameterError(
            f"{source} has no {scope} {metric} entry: choose another metric or re-run "
            "`pgaudit attack`.",
            "metric",
        )
    if entry.value is None:
        reason = entry.reason or "no reason recorded"
        raise ParameterError(
            f"{source}: {scope} {metric} is undefined ({reason}); choose another metric or "
            "fix the audit data.",
            "metric",
        )
    name = f"{scope} {metric}"
    context = _robust_context(results) if scope == "robust" else "no attack"
    value = float(entry.value)
    what = ""
    if criteria.use_lower_bound:
        if entry.ci is None:
            raise ParameterError(
                f"{source}: {scope} {metric} has no confidence interval; re-run the audit with "
                "bootstrap intervals or drop use_lower_bound.",
                "use_lower_bound",
            )
        lo, hi = float(entry.ci[0]), float(entry.ci[1])
        context = f"95% CI {lo:.3f}-{hi:.3f}, {context}"
        value, what = lo, " lower bound"
    passed = value >= threshold
    shown, bar = _fmt(value, threshold)
    verdict = (
        f"PASS {name}{what} {shown} >= {bar}" if passed else f"FAIL {name}{what} {shown} < {bar}"
    )
    return CriterionResult(
        name=name,
        scope=scope,
        metric=metric,
        passed=passed,
        value=value,
        threshold=float(threshold),
        message=f"{verdict} ({context})",
    )


def _drop_criterion(drop: Drop, baseline: Audit, category: str | None = None) -> CriterionResult:
    name = f"{drop.scope} {drop.metric} drop" + (f" [{category}]" if category else "")
    shown, bar = _fmt(drop.drop, drop.max_drop)
    op = "<=" if drop.drop <= drop.max_drop else ">"
    verdict = f"{'PASS' if drop.passed else 'FAIL'} {name} {shown} {op} {bar}"
    context = f"{drop.baseline:.3f} -> {drop.value:.3f} against baseline {baseline.source}"
    if drop.bound is not None:
        verdict += "" if not drop.passed else " but not significantly"
        context += f"; paired bootstrap: at least {drop.bound:.3f} with 95% confidence"
    return CriterionResult(
        name=name, scope=drop.scope, metric=drop.metric, passed=drop.passed, value=drop.drop,
        threshold=drop.max_drop, message=f"{verdict} ({context})", op="<=",
    )  # fmt: skip


def evaluate_gate(
    results: AuditResults,
    criteria: GateCriteria | Mapping[str, Any],
    *,
    source: str = "results.json",
    baseline: Audit | None = None,
    folder: Path | None = None,
) -> GateOutcome:
    """Check an audit against the criteria (a :class:`GateCriteria` or a ``[gate]`` table).

    Raises :class:`PgauditError` when no threshold is set or a needed metric is missing or
    undefined. ``source`` names the file in those messages. ``baseline``: the audit that
    ``max_drop`` compares with; ``folder``: this audit's folder (its scores.npz, for
    ``significant_only``).
    """
    if not isinstance(criteria, GateCriteria):
        criteria = GateCriteria.from_mapping(criteria)
    if criteria.max_drop is not None and baseline is None:
        raise ParameterError(
            "max_drop needs baseline: the audit to compare with.", "max_drop", "baseline"
        )
    if baseline is not None and criteria.max_drop is None:
        raise ParameterError(
            "baseline needs max_drop: the largest drop of the robust metric to allow, e.g. 0.02.",
            "baseline", "max_drop",
        )  # fmt: skip
    if criteria.significant_only and criteria.max_drop is None:
        raise ParameterError(
            "significant_only applies to max_drop: give a baseline and max_drop.",
            "significant_only", "max_drop",
        )  # fmt: skip
    wanted = (criteria.min_robust_auroc, criteria.min_clean_auroc, criteria.max_drop,
              criteria.max_parity_gap)  # fmt: skip
    if wanted == (None,) * 4:
        raise ParameterError(NO_CRITERION, "min_robust_auroc")
    checks = []
    if criteria.min_robust_auroc is not None:
        checks.append(_check(results, "robust", criteria.min_robust_auroc, criteria, source))
    if criteria.min_clean_auroc is not None:
        checks.append(_check(results, "clean", criteria.min_clean_auroc, criteria, source))
    if baseline is not None and criteria.max_drop is not None:
        drop = check_drop(
            Audit(results, source, folder), baseline, metric=criteria.metric,
            max_drop=criteria.max_drop, significant_only=criteria.significant_only,
        )  # fmt: skip
        checks.append(_drop_criterion(drop, baseline))
    if criteria.max_parity_gap is not None:
        checks.append(_parity_criterion(results, criteria.max_parity_gap, source))
    return GateOutcome(checks)


def _parity_criterion(results: AuditResults, max_gap: float, source: str) -> CriterionResult:
    """The export's worst clean gap to its source (results.json ``parity``) against ``max_gap``."""
    if results.parity is None or not isinstance(results.parity.get("worst_gap"), int | float):
        raise ParameterError(
            f"max_parity_gap: {source} has no parity section; audit the exported file with "
            "--surrogate (the model it was exported from).",
            "max_parity_gap",
        )
    gap = float(results.parity["worst_gap"])
    passed = gap <= max_gap
    verdict = f"{'PASS' if passed else 'FAIL'} parity worst gap {gap:.2e} {'<=' if passed else '>'}"
    context = f"clean score/map vs {results.parity.get('source', 'the surrogate')}, of its range"
    return CriterionResult(
        name="parity worst gap", scope="parity", metric="worst_gap", passed=passed, value=gap,
        threshold=float(max_gap), message=f"{verdict} {max_gap:.2e} ({context})", op="<=",
    )  # fmt: skip


def _summary_criterion(
    summary: DatasetSummary, scope: str, threshold: float, metric: str, source: str
) -> list[CriterionResult]:
    """The mean over the categories, then each category (so the worst one), against the bar."""
    mean = summary.mean(scope, metric)
    if mean.value is None:
        raise ParameterError(
            f"{source}: {scope} {metric} has no mean ({mean.reason}); choose another metric or "
            "re-run the audit of those categories.",
            "metric",
        )
    rows = [(f"{scope} {metric} (mean)", mean.value, f"mean of {len(summary.categories)} "
             "categories")]  # fmt: skip
    worst = summary.worst(scope, metric)
    for entry in summary.categories:
        value = entry.metric(scope, metric).value  # type: ignore[union-attr]
        note = "the worst category" if worst is not None and entry is worst[0] else "category"
        rows.append((f"{scope} {metric} [{entry.name}]", value, note))
    out = []
    for name, value, context in rows:
        passed = value >= threshold
        shown, bar = _fmt(value, threshold)
        verdict = f"PASS {name} {shown} >= {bar}" if passed else f"FAIL {name} {shown} < {bar}"
        out.append(CriterionResult(name, scope, metric, passed, value, float(threshold),
                                   f"{verdict} ({context})"))  # fmt: skip
    return out


def evaluate_summary_gate(
    summary: DatasetSummary,
    criteria: GateCriteria,
    *,
    source: str = "summary.json",
    baseline: DatasetSummary | None = None,
) -> GateOutcome:
    """The gate on a whole dataset: each threshold on the mean over the categories and on every
    category (one criterion each, so the worst decides); ``max_drop`` per category against a
    baseline summary of the same categories."""
    if summary.failed:
        names = ", ".join(c.name for c in summary.failed)
        raise PgauditError(
            f"{source}: the audit of {names} failed; fix it and re-run `pgaudit attack`, so that "
            "every category is gated."
        )
    if criteria.use_lower_bound:
        raise ParameterError(
            "use_lower_bound compares one audit's interval; a dataset's mean has none: drop it.",
            "use_lower_bound",
        )
    if (criteria.max_drop is None) != (baseline is None):
        raise ParameterError(
            "max_drop and baseline go together: give both or neither.", "max_drop", "baseline"
        )
    if criteria.max_parity_gap is not None:
        raise ParameterError(
            "max_parity_gap applies to one export's audit, not a dataset summary: drop it.",
            "max_parity_gap",
        )
    if (criteria.min_robust_auroc, criteria.min_clean_auroc, criteria.max_drop) == (None,) * 3:
        raise ParameterError(NO_CRITERION, "min_robust_auroc")
    checks: list[CriterionResult] = []
    for scope, threshold in (("robust", criteria.min_robust_auroc),
                             ("clean", criteria.min_clean_auroc)):  # fmt: skip
        if threshold is not None:
            checks += _summary_criterion(summary, scope, threshold, criteria.metric, source)
    if baseline is not None and criteria.max_drop is not None:
        mine, theirs = [c.name for c in summary.categories], [c.name for c in baseline.categories]
        if sorted(mine) != sorted(theirs):
            raise ParameterError(
                f"baseline summary has the categories {', '.join(sorted(theirs))}, not "
                f"{', '.join(sorted(mine))}: compare audits of the same dataset.",
                "baseline",
            )
        by_name = {c.name: c for c in baseline.categories}
        for entry in summary.categories:
            here, there = summary.audit_folder(entry), baseline.audit_folder(by_name[entry.name])
            assert here is not None and there is not None  # "ok" entries have their folder
            audit = Audit(read_results(here), str(here / "results.json"), here)
            against = Audit(read_results(there), str(there / "results.json"), there)
            drop = check_drop(audit, against, metric=criteria.metric,
                              max_drop=criteria.max_drop, significant_only=criteria.significant_only)  # fmt: skip
            checks.append(_drop_criterion(drop, against, entry.name))
    return GateOutcome(checks)


def write_junit(outcome: GateOutcome, path: str | Path) -> Path:
    """Write the outcome as JUnit XML: one testsuite "pgaudit.gate", one testcase per criterion."""
    path = Path(path)
    failures = len(outcome.failures)
    attrs = {"tests": str(len(outcome.criteria)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", {"name": "pgaudit", **attrs})
    suite = ET.SubElement(
        root, "testsuite", {"name": "pgaudit.gate", **attrs, "skipped": "0", "time": "0"}
    )
    for criterion in outcome.criteria:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": "pgaudit.gate",
                "name": f"{criterion.name} {criterion.op} {criterion.threshold:g}",
                "time": "0",
            },
        )
        if criterion.passed:
            ET.SubElement(case, "system-out").text = criterion.message
        else:
            failure = ET.SubElement(
                case, "failure", {"message": criterion.message, "type": "GateFailure"}
            )
            failure.text = criterion.message
    ET.indent(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise PgauditError(
            f"{path}: cannot write the JUnit file ({exc.strerror}); choose a writable path."
        ) from None
    return path


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell (no pipes, no line breaks, no HTML)."""
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("\n", " ")):
        text = text.replace(a, b)
    return text


def summary_markdown(outcome: GateOutcome, title: str = "pgaudit gate") -> str:
    """A short Markdown verdict: a heading with PASS / FAIL and one table row per criterion."""
    lines = [
        f"### {_md(title)}: {'PASS' if outcome.passed else 'FAIL'}",
        "",
        "| criterion | value | bar | verdict | details |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in outcome.criteria:
        op = {"<=": "≤", ">=": "≥"}.get(c.op, c.op)
        value, bar = _fmt(c.value, c.threshold)
        lines.append(f"| {_md(c.name)} | {value} | {op} {bar} | "
                     f"{'pass' if c.passed else '**FAIL**'} | {_md(c.message)} |")  # fmt: skip
    return "\n".join(lines) + "\n\n"


def write_summary_md(outcome: GateOutcome, path: str | Path, title: str = "pgaudit gate") -> Path:
    """Append :func:`summary_markdown` to ``path`` (GitHub's ``$GITHUB_STEP_SUMMARY`` appends)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as file:
            file.write(summary_markdown(outcome, title))
    except OSError as exc:
        raise PgauditError(
            f"{path}: cannot write the Markdown summary ({exc.strerror}); choose a writable path."
        ) from None
    return path
