"""results.json (schema ``pgaudit.results/1``): the contract between attack, report and gate.

Layout (every metric is a :class:`MetricValue`: ``{"value": float|None, "ci": [lo, hi]|None,
"reason": str|None}``; ``value`` is None exactly when the metric is undefined, and ``reason`` says
why, e.g. "only one class among the test images")::

    {
      "schema": "pgaudit.results/1",
      "created": "2026-11-29T04:00:00Z",
      "model":  {"spec": "hardened.pt", "kind": "patchguard", "name": "PatchGuard (tiny)",
                 "preset": "tiny", "fingerprint": "sha256:…", "config": {…}, "training": {…}},
      "data":   {"name": "synth/bottle", "layout": "mvtec", "category": "bottle", "image_size": 128,
                 "n_test": 40, "n_normal": 20, "n_anomalous": 20, "has_masks": true,
                 "defect_types": {"good": 20, "scratch": 10, …}, "fingerprint": "sha256:…"},
      "suite":  {"name": "quick", "description": "…", "overrides": {…},
                 "attacks": [<attack spec>, …], "skipped": [{"id": "…", "reason": "…"}]},
      "headline_eps": 0.0313725, "headline_eps_label": "8/255",
      "clean":  {"metrics": {<name>: MetricValue},
                 "operating_point": {"miss_rate": MetricValue, "false_alarm_rate": MetricValue},
                 "threshold": float|None},
      "attacks": [{"id": "pgd-linf-8_255-10-detection", "attack": "pgd", "library": "art",
                   "norm": "inf", "eps": 0.0313725, "eps_label": "8/255", "steps": 10,
                   "step_size": 0.0078, "restarts": 1, "random_init": true,
                   "objective": "detection", "notes": "…",           # <attack spec> ends here
                   "metrics": {<name>: MetricValue}, "operating_point": {…},
                   "seconds": 1.23, "budget": {"max_linf": 0.0313, "max_l2": 2.1}}],
      "robust": {"eps": 0.0313725, "eps_label": "8/255", "attack_ids": [...],
                 "metrics": {<name>: MetricValue}, "operating_point": {…}, "notes": "…"},
      "sanity": [{"name": "unbounded-budget", "status": "pass|warn|fail|skip",
                  "evidence": "…", "meaning": "…"}],
      "adaptive": {"differentiated": "…", "detection_objective": "…",
                   "localization_objective": "…", "eot": false, "eot_draws": null,
                   "gradient_checked": true, "warning": "…" (only when the check failed)},
      "gallery": [{"name": "test/scratch/003.png", "label": 1, "clean": "gallery/0_clean.png",
                   "adversarial": "gallery/0_adversarial.png", "perturbation": "…",
                   "ground_truth": "…", "clean_map": "…", "adversarial_map": "…",
                   "attack_id": "…", "clean_score": 1.2, "adversarial_score": 0.4,
                   "map_range": [lo, hi]}],
      "meta":   {"pgaudit_version": "0.1.0", "python": "3.11.7", "torch": "…", "art": "…",
                 "timm": "…", "numpy": "…", "seed": 0, "device": "cpu", "precision": "fp32",
                 "batch_size": 16,
                 "workers": 1, "bootstrap": 200, "started": "…", "seconds": 12.3,
                 "durations": {…}, "command": "pgaudit attack …"},
      "gate":   {"min_robust_auroc": 0.8, …}   (optional: a [gate] table, evaluated afresh)
      "parity": {"source": "…", "images": 40, "score": {"max_gap": …, "median_gap": …,
                 "source_auroc": …, "exported_auroc": …, "auroc_gap": …, "rank_correlation": …},
                 "pixel_map": {…} | null, "worst_gap": …,
                 "robust": [{"attack": "…-transfer", "source_image_auroc": …,
                             "exported_image_auroc": …, "gap": …}, …]}
                (optional: an exported file audited with --surrogate)
    }

Metric names: ``image_auroc``, ``pixel_auroc``, ``aupro``, ``image_f1_max``, ``pixel_f1_max``.

In Python the file is an :class:`AuditResults`: ``AuditResults.from_json(data, source)`` checks
it once (a :class:`PgauditError` naming the file and field otherwise) and ``to_json()`` gives the
same dict back, key for key. ``model``, ``data``, ``meta``, ``adaptive`` and the gallery entries
are free-form JSON objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pgaudit.errors import PgauditError

#: Bootstrap resamples for the 95 % intervals of every metric, in the API and the CLI alike.
DEFAULT_BOOTSTRAP = 200

SCHEMA = "pgaudit.results/1"
REQUIRED_KEYS = ("schema", "model", "data", "suite", "clean", "attacks", "robust", "meta")

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES: tuple[str, ...] = get_args(Status)

JSON = dict[str, Any]
#: A metric as :mod:`pgaudit.metrics` returns it: ``(value, ci, reason)``.
Measured = tuple[float | None, tuple[float, float] | None, str | None]
_FIX = "it is incomplete or was edited; re-run `pgaudit attack`."


# ------------------------------------------------------------------------------------------------
# reading helpers: every check names the file and the field


class _Reader:
    """One JSON object being read: ``where`` is its path in the file (``robust.metrics``)."""

    def __init__(self, data: Any, source: str, where: str) -> None:
        self.source, self.where = source, where
        if not isinstance(data, Mapping):
            raise self.error(f"{where} should be an object, not {_kind(data)}")
        self.data = data

    def error(self, what: str) -> PgauditError:
        return PgauditError(f"{self.source}: {what}; {_FIX}")

    def sub(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kinds: tuple[type, ...], what: str, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise PgauditError(f"{self.source} has no {self.sub(key)}: {_FIX}")
            return default
        value = self.data[key]
        if value is None and default is None:
            return None
        bad = isinstance(value, bool) and bool not in kinds
        if (
            bad
            or not isinstance(value, kinds)
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            raise self.error(f"{self.sub(key)} should be {what}, not {_kind(value)}")
        return value

    def text(self, key: str, default: Any = ...) -> Any:
        return self.get(key, (str,), "a string", default)

    def number(self, key: str, default: Any = ...) -> Any:
        return self.get(key, (int, float), "a number", default)

    def integer(self, key: str, default: Any = ...) -> Any:
        return self.get(key, (int,), "an integer", default)

    def mapping(self, key: str, default: Any = ...) -> Any:
        return self.get(key, (Mapping,), "an object", default)

    def array(self, key: str, default: Any = ...) -> Any:
        return self.get(key, (list,), "a list", default)

    def child(self, key: str) -> _Reader:
        return _Reader(self.mapping(key), self.source, self.sub(key))

    def items(self, key: str, default: Any = ...) -> list[_Reader]:
        values = self.array(key, default)
        return [
            _Reader(v, self.source, f"{self.sub(key)}[{i}]") for i, v in enumerate(values or [])
        ]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), repr(value) if isinstance(value, int | float) else type(value).__name__
    )


def _put(out: JSON, key: str, value: Any) -> None:
    """Write an optional key only when it is set (as the writers do)."""
    if value is not None:
        out[key] = value


# ------------------------------------------------------------------------------------------------
# the types


@dataclass(frozen=True)
class MetricValue:
    """One metric: the value (None when undefined, ``reason`` says why) and its 95 % interval."""

    value: float | None
    ci: tuple[float, float] | None = None
    reason: str | None = None

    @classmethod
    def of(
        cls, value: float | None, reason: str | None = None, ci: tuple[float, float] | None = None
    ) -> MetricValue:
        """As the writers store it: floats, and a reason for every undefined value."""
        if value is None and not reason:
            raise ValueError("an undefined metric needs a reason")
        bounds = None if ci is None else (float(ci[0]), float(ci[1]))
        return cls(None if value is None else float(value), bounds, reason)

    def to_json(self) -> JSON:
        ci = None if self.ci is None else [self.ci[0], self.ci[1]]
        return {"value": self.value, "ci": ci, "reason": self.reason}

    @classmethod
    def _read(cls, r: _Reader) -> MetricValue:
        ci = r.array("ci", None)
        if ci is not None and (
            len(ci) != 2
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in ci)
        ):
            raise r.error(f"{r.sub('ci')} should be [low, high]")
        return cls(
            r.number("value", None), None if ci is None else (ci[0], ci[1]), r.text("reason", None)
        )


def metric_values(estimates: Mapping[str, Measured]) -> dict[str, MetricValue]:
    """``{name: MetricValue}`` from the ``(value, ci, reason)`` tuples of
    :func:`pgaudit.metrics.evaluate` / :func:`~pgaudit.metrics.operating_point`."""
    return {
        name: MetricValue.of(value, reason, ci) for name, (value, ci, reason) in estimates.items()
    }


def metric_entry(
    value: float | None, reason: str | None = None, ci: tuple[float, float] | None = None
) -> JSON:
    """One metric as stored in results.json (``MetricValue.of(...).to_json()``)."""
    return MetricValue.of(value, reason, ci).to_json()


def _metric_map(r: _Reader, key: str) -> dict[str, MetricValue]:
    block = r.child(key)
    return {
        str(name): MetricValue._read(_Reader(v, r.source, block.sub(str(name))))
        for name, v in block.data.items()
    }


def _metric_json(metrics: Mapping[str, MetricValue]) -> JSON:
    return {name: m.to_json() for name, m in metrics.items()}


@dataclass(frozen=True)
class Section:
    """Metrics of one set of scores (clean, one attack, the robust worst case) and the operating
    point (``miss_rate``, ``false_alarm_rate``) at the clean threshold."""

    metrics: Mapping[str, MetricValue]
    operating_point: Mapping[str, MetricValue] = field(default_factory=dict)

    def metric(self, name: str) -> MetricValue | None:
        return self.metrics.get(name)

    def _parts(self) -> JSON:
        return {
            "metrics": _metric_json(self.metrics),
            "operating_point": _metric_json(self.operating_point),
        }

    @staticmethod
    def _read_parts(r: _Reader) -> JSON:
        op = _metric_map(r, "operating_point") if "operating_point" in r.data else {}
        return {"metrics": _metric_map(r, "metrics"), "operating_point": op}


@dataclass(frozen=True)
class CleanSection(Section):
    """The clean pass; ``threshold``: the score at 95 % TPR (None without anomalous images)."""

    threshold: float | None = None

    def to_json(self) -> JSON:
        return {**self._parts(), "threshold": self.threshold}

    @classmethod
    def _read(cls, r: _Reader) -> CleanSection:
        return cls(**cls._read_parts(r), threshold=r.number("threshold", None))


@dataclass(frozen=True)
class RobustSection(Section):
    """Per-example worst case over the clean images and the headline-ε L∞ attacks."""

    eps: float | None = None
    eps_label: str | None = None
    attack_ids: tuple[str, ...] = ()
    notes: str | None = None

    def to_json(self) -> JSON:
        out: JSON = {
            "eps": self.eps,
            "eps_label": self.eps_label,
            "attack_ids": list(self.attack_ids),
        }
        out.update(self._parts())
        _put(out, "notes", self.notes)
        return out

    @classmethod
    def _read(cls, r: _Reader) -> RobustSection:
        ids = r.array("attack_ids", [])
        if not all(isinstance(i, str) for i in ids):
            raise r.error(f"{r.sub('attack_ids')} should be a list of strings")
        return cls(
            **cls._read_parts(r), eps=r.number("eps", None), eps_label=r.text("eps_label", None),
            attack_ids=tuple(ids), notes=r.text("notes", None),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class AttackSettings:
    """One attack as configured (``suite.attacks[]``, and the first keys of ``attacks[]``)."""

    id: str
    attack: str
    library: str
    norm: str
    eps: float
    eps_label: str | None = None
    steps: int = 1
    step_size: float | None = None
    restarts: int = 1
    random_init: bool | None = None
    objective: str = "detection"
    notes: str | None = None
    loss: str = "margin"  # written only when not "margin" (files of margin attacks unchanged)
    transfer: bool = False  # crafted on a surrogate; written only when true

    def settings_json(self) -> JSON:
        out: JSON = {
            "id": self.id, "attack": self.attack, "library": self.library, "norm": self.norm,
            "eps": self.eps,
        }  # fmt: skip
        _put(out, "eps_label", self.eps_label)
        out.update(steps=self.steps, step_size=self.step_size, restarts=self.restarts)
        _put(out, "random_init", self.random_init)
        out["objective"] = self.objective
        if self.loss != "margin":
            out["loss"] = self.loss
        if self.transfer:
            out["transfer"] = True
        _put(out, "notes", self.notes)
        return out

    def to_json(self) -> JSON:
        return self.settings_json()

    @staticmethod
    def _read_settings(r: _Reader) -> JSON:
        return {
            "id": r.text("id"), "attack": r.text("attack"), "library": r.text("library", ""),
            "norm": r.text("norm"), "eps": r.number("eps"), "eps_label": r.text("eps_label", None),
            "steps": r.integer("steps", 1), "step_size": r.number("step_size", None),
            "restarts": r.integer("restarts", 1),
            "random_init": r.get("random_init", (bool,), "true or false", None),
            "objective": r.text("objective", "detection"), "notes": r.text("notes", None),
            "loss": r.text("loss", "margin"),
            "transfer": r.get("transfer", (bool,), "true or false", False),
        }  # fmt: skip

    @classmethod
    def _read(cls, r: _Reader) -> AttackSettings:
        return cls(**cls._read_settings(r))


@dataclass(frozen=True, kw_only=True)
class AttackResult(AttackSettings, Section):
    """One ``attacks[]`` entry: the settings, the section of its scores, time and measured
    perturbation (``budget``: ``max_linf``, ``max_l2``)."""

    seconds: float | None = None
    budget: Mapping[str, float] | None = None

    def to_json(self) -> JSON:
        out = {**self.settings_json(), **self._parts()}
        _put(out, "seconds", self.seconds)
        _put(out, "budget", None if self.budget is None else dict(self.budget))
        return out

    @classmethod
    def _read(cls, r: _Reader) -> AttackResult:
        return cls(
            **cls._read_settings(r), **cls._read_parts(r), seconds=r.number("seconds", None),
            budget=r.mapping("budget", None),
        )  # fmt: skip


@dataclass(frozen=True)
class SanityCheck:
    """One item of the gradient-masking checklist (:mod:`pgaudit.attacks.sanity`)."""

    name: str
    status: Status
    evidence: str
    meaning: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")

    def to_json(self) -> JSON:
        return {"name": self.name, "status": self.status, "evidence": self.evidence,
                "meaning": self.meaning}  # fmt: skip

    @classmethod
    def _read(cls, r: _Reader) -> SanityCheck:
        status = r.text("status")
        if status not in STATUSES:
            raise r.error(f"{r.sub('status')} {status!r} should be one of {', '.join(STATUSES)}")
        return cls(r.text("name"), status, r.text("evidence", ""), r.text("meaning", ""))


@dataclass(frozen=True)
class SuiteInfo:
    """The suite that ran: its attacks (those skipped for lack of masks under ``skipped``)."""

    name: str
    description: str = ""
    attacks: tuple[AttackSettings, ...] = ()
    overrides: Mapping[str, Any] | None = None
    skipped: tuple[Mapping[str, Any], ...] | None = None

    def to_json(self) -> JSON:
        out: JSON = {"name": self.name, "description": self.description}
        _put(out, "overrides", None if self.overrides is None else dict(self.overrides))
        out["attacks"] = [a.to_json() for a in self.attacks]
        _put(out, "skipped", None if self.skipped is None else [dict(s) for s in self.skipped])
        return out

    @classmethod
    def _read(cls, r: _Reader) -> SuiteInfo:
        skipped = r.array("skipped", None)
        return cls(
            r.text("name"), r.text("description", ""),
            tuple(AttackSettings._read(a) for a in r.items("attacks", [])),
            r.mapping("overrides", None),
            None if skipped is None else tuple(s.data for s in r.items("skipped")),
        )  # fmt: skip


@dataclass(frozen=True)
class AuditResults:
    """A whole results.json (see the module docstring for the layout)."""

    model: Mapping[str, Any]
    data: Mapping[str, Any]
    suite: SuiteInfo
    clean: CleanSection
    attacks: tuple[AttackResult, ...]
    robust: RobustSection
    meta: Mapping[str, Any]
    created: str | None = None
    headline_eps: float | None = None
    headline_eps_label: str | None = None
    sanity: tuple[SanityCheck, ...] = ()
    adaptive: Mapping[str, Any] | None = None
    gallery: tuple[Mapping[str, Any], ...] = ()
    gate: Mapping[str, Any] | None = None
    #: An export audited with the model it came from (``--surrogate``): clean and robust
    #: agreement (see :meth:`pgaudit.attacks.runner._Audit.parity_section`).
    parity: Mapping[str, Any] | None = None
    schema: str = SCHEMA

    def attack(self, attack_id: str) -> AttackResult:
        """The ``attacks[]`` entry with this id."""
        return next(a for a in self.attacks if a.id == attack_id)

    def to_json(self) -> JSON:
        """The dict written to results.json."""
        out: JSON = {"schema": self.schema}
        _put(out, "created", self.created)
        out.update(model=dict(self.model), data=dict(self.data), suite=self.suite.to_json())
        _put(out, "headline_eps", self.headline_eps)
        _put(out, "headline_eps_label", self.headline_eps_label)
        out.update(
            clean=self.clean.to_json(), attacks=[a.to_json() for a in self.attacks],
            robust=self.robust.to_json(), sanity=[s.to_json() for s in self.sanity],
        )  # fmt: skip
        _put(out, "adaptive", None if self.adaptive is None else dict(self.adaptive))
        _put(out, "parity", None if self.parity is None else dict(self.parity))
        out.update(gallery=[dict(g) for g in self.gallery], meta=dict(self.meta))
        _put(out, "gate", None if self.gate is None else dict(self.gate))
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "results.json") -> AuditResults:
        """Check a results.json dict once; a :class:`PgauditError` names ``source`` and the field."""
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise PgauditError(
                f"{source} is not a pgaudit results file (schema {found!r}, expected {SCHEMA!r}): "
                "pass the results.json written by `pgaudit attack`."
            )
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise PgauditError(f"{source} lacks the section(s) {', '.join(missing)}: {_FIX}")
        r = _Reader(data, source, "")
        return cls(
            model=r.mapping("model"),
            data=r.mapping("data"),
            suite=SuiteInfo._read(r.child("suite")),
            clean=CleanSection._read(r.child("clean")),
            attacks=tuple(AttackResult._read(a) for a in r.items("attacks")),
            robust=RobustSection._read(r.child("robust")),
            meta=r.mapping("meta"),
            created=r.text("created", None),
            headline_eps=r.number("headline_eps", None),
            headline_eps_label=r.text("headline_eps_label", None),
            sanity=tuple(SanityCheck._read(s) for s in r.items("sanity", [])),
            adaptive=r.mapping("adaptive", None),
            gallery=tuple(g.data for g in r.items("gallery", [])),
            gate=r.mapping("gate", None),
            parity=r.mapping("parity", None),
        )


# ------------------------------------------------------------------------------------------------
# files


def results_path(path: str | Path) -> Path:
    """``path``'s results.json: the file itself, or the one inside an audit folder."""
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def read_results(path: str | Path) -> AuditResults:
    """Read and check a results.json (or the audit folder that holds one)."""
    path = results_path(path)
    if not path.is_file():
        raise PgauditError(
            f"{path} does not exist: pass the results.json written by `pgaudit attack` "
            "(or the audit folder that holds it)."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PgauditError(
            f"{path} is not valid JSON ({exc}): re-run `pgaudit attack` to write it again."
        ) from None
    except RecursionError:  # "[[[[…" deeper than the parser goes
        raise PgauditError(
            f"{path} is nested too deeply to be a results file: re-run `pgaudit attack` to write "
            "it again."
        ) from None
    except OSError as exc:
        raise PgauditError(
            f"{path} cannot be read ({exc.strerror}): check its permissions."
        ) from None
    return AuditResults.from_json(data, str(path))


def load_results(path: str | Path) -> JSON:
    """A checked results.json as its dict (``read_results(path).to_json()``)."""
    return read_results(path).to_json()


def write_results(results: AuditResults | Mapping[str, Any], path: str | Path) -> Path:
    """Write results.json atomically (temp file + rename); a dict is checked first."""
    if not isinstance(results, AuditResults):
        results = AuditResults.from_json(results, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(results.to_json(), indent=2, allow_nan=False) + "\n"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
