"""The regression gate: did this audit's robust metric drop against a baseline audit?

``pgaudit gate audit/ --baseline main-audit/ --max-drop 0.02`` fails when the robust value of the
gate metric is more than ``max_drop`` below the baseline's. Only like is compared with like: both
audits must be of the same test images (the data fingerprint) under the same suite at the same
headline ε, else the comparison is refused (exit 2, one sentence).

``significant_only``: fail only when the drop beyond ``max_drop`` is real — a paired bootstrap
resamples the test images (the same draw for both audits, from their ``scores.npz``) and the
drop fails when the lower end of its one-sided 95 % interval (the 5th percentile of the
resampled drops) still exceeds ``max_drop``. Per-image scores are what both audits share, so this
applies to ``image_auroc``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgaudit.errors import ParameterError, PgauditError
from pgaudit.metrics import image_auroc
from pgaudit.results import AuditResults

RESAMPLES = 1000


@dataclass(frozen=True)
class Audit:
    """An audit to compare: its results, the file they came from and its folder (scores.npz)."""

    results: AuditResults
    source: str
    folder: Path | None = None


def check_max_drop(max_drop: float | None) -> None:
    if max_drop is not None and not (math.isfinite(max_drop) and 0.0 <= max_drop <= 1.0):
        raise ParameterError(
            f"max_drop {max_drop}: the allowed drop must lie between 0 and 1.", "max_drop"
        )


def _identity(audit: Audit) -> dict[str, object]:
    r = audit.results
    data = dict(r.data or {})
    counts = tuple(data.get(k) for k in ("n_test", "n_normal", "n_anomalous"))
    return {  # a dataset without a fingerprint (not a folder) is known by its counts
        "test images": data.get("fingerprint") or counts,
        "suite": r.suite.name,
        "headline eps": r.headline_eps,
        "attacks": sorted(a.id for a in r.attacks),
    }


def check_comparable(audit: Audit, baseline: Audit) -> None:
    """Refuse a baseline of other test images, another suite or another headline ε."""
    mine, theirs = _identity(audit), _identity(baseline)
    for what in mine:
        if mine[what] != theirs[what]:
            shown = (
                f"{len(theirs[what])} vs {len(mine[what])} attacks"  # type: ignore[arg-type]
                if what == "attacks"
                else f"{theirs[what]} vs {mine[what]}"
            )
            raise ParameterError(
                f"baseline {baseline.source} differs from {audit.source} in its {what} "
                f"({shown}): compare audits of the same data and suite.",
                "baseline",
            )


def _value(audit: Audit, scope: str, metric: str) -> float:
    section = audit.results.robust if scope == "robust" else audit.results.clean
    entry = section.metric(metric)
    if entry is None or entry.value is None:
        raise ParameterError(
            f"{audit.source} has no {scope} {metric} value: choose another metric or re-run "
            "`pgaudit attack`.",
            "metric",
        )
    return float(entry.value)


def _scores(audit: Audit, scope: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, labels, image scores) of ``scope`` from the audit's scores.npz."""
    path = audit.folder / "scores.npz" if audit.folder is not None else None
    if path is None or not path.is_file():
        raise ParameterError(
            f"significant_only needs the per-image scores of {audit.source} "
            "(scores.npz beside results.json); pass the audit folder.",
            "significant_only",
        )
    try:
        with np.load(path) as data:
            return data["names"], data["labels"], data[f"{scope}.image_scores"]
    except (OSError, KeyError, ValueError) as exc:
        raise PgauditError(
            f"{path}: unreadable or incomplete ({exc}); re-run `pgaudit attack`."
        ) from None


def paired_drop_lower_bound(
    baseline: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray],
    *, resamples: int = RESAMPLES, seed: int = 0,
) -> float:  # fmt: skip
    """5th percentile of AUROC(baseline) - AUROC(candidate) over image resamples drawn once for
    both (``(labels, scores)`` of the same images in the same order)."""
    labels, base = baseline
    _, cand = candidate
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() == labels[idx].max():
            continue  # one class only: AUROC undefined for this draw
        drops.append(image_auroc(labels[idx], base[idx]) - image_auroc(labels[idx], cand[idx]))
    if not drops:
        raise PgauditError("the test images hold one class only: no AUROC to compare.")
    return float(np.percentile(drops, 5))


def _paired(audit: Audit, baseline: Audit, scope: str) -> tuple[tuple, tuple]:
    names, labels, scores = _scores(audit, scope)
    base_names, base_labels, base_scores = _scores(baseline, scope)
    order = {str(n): i for i, n in enumerate(base_names)}
    if sorted(order) != sorted(str(n) for n in names):
        raise ParameterError(
            f"baseline {baseline.source} scored other test images than {audit.source}: "
            "compare audits of the same data.",
            "baseline",
        )
    idx = np.array([order[str(n)] for n in names])
    if not np.array_equal(base_labels[idx], labels):
        raise ParameterError(
            f"baseline {baseline.source} labels the test images differently: compare audits of "
            "the same data.",
            "baseline",
        )
    return (base_labels[idx], base_scores[idx]), (labels, scores)


@dataclass(frozen=True)
class Drop:
    """How far ``scope`` ``metric`` fell from the baseline (``drop`` > 0: it got worse)."""

    scope: str
    metric: str
    baseline: float
    value: float
    max_drop: float
    passed: bool
    bound: float | None = None  # significant_only: the 95 % lower bound of the drop

    @property
    def drop(self) -> float:
        return self.baseline - self.value


def check_drop(
    audit: Audit,
    baseline: Audit,
    *,
    metric: str,
    max_drop: float,
    significant_only: bool = False,
    scope: str = "robust",
) -> Drop:
    """``scope`` ``metric`` of ``audit`` at most ``max_drop`` below ``baseline``'s?"""
    check_max_drop(max_drop)
    check_comparable(audit, baseline)
    if significant_only and metric != "image_auroc":
        raise ParameterError(
            f"significant_only resamples per-image scores, so it applies to image_auroc, not "
            f"metric {metric}.",
            "significant_only", "metric",
        )  # fmt: skip
    base, now = _value(baseline, scope, metric), _value(audit, scope, metric)
    passed, bound = base - now <= max_drop, None
    if significant_only and not passed:
        bound = paired_drop_lower_bound(*_paired(audit, baseline, scope))
        passed = bound <= max_drop
    return Drop(scope, metric, base, now, float(max_drop), passed, bound)
