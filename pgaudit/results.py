"""results.json (schema ``pgaudit.results/1``): the contract between attack, report and gate.

Layout (every metric is a :data:`MetricEntry`: ``{"value": float|None, "ci": [lo, hi]|None,
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
      "suite":  {"name": "quick", "description": "…", "attacks": [<attack spec>, …]},
      "headline_eps": 0.0313725, "headline_eps_label": "8/255",
      "clean":  {"metrics": {<name>: MetricEntry}, "threshold": float|None,
                 "operating_point": {"miss_rate": MetricEntry, "false_alarm_rate": MetricEntry}},
      "attacks": [{"id": "pgd-linf-8_255-10-detection", "attack": "pgd", "library": "art",
                   "norm": "inf", "eps": 0.0313725, "eps_label": "8/255", "steps": 10,
                   "step_size": 0.0078, "restarts": 1, "objective": "detection",
                   "metrics": {<name>: MetricEntry},
                   "operating_point": {"miss_rate": …, "false_alarm_rate": …},
                   "seconds": 1.23, "notes": "…"}],
      "robust": {"eps": 0.0313725, "eps_label": "8/255", "attack_ids": [...],
                 "metrics": {<name>: MetricEntry}, "operating_point": {…}},
      "sanity": [{"name": "unbounded-budget", "status": "pass|warn|fail|skip",
                  "evidence": "…", "meaning": "…"}],
      "gallery": [{"name": "test/scratch/003.png", "label": 1, "clean": "gallery/0_clean.png",
                   "adversarial": "gallery/0_adv.png", "perturbation": "…", "ground_truth": "…",
                   "clean_map": "…", "adversarial_map": "…", "attack_id": "…"}],
      "meta":   {"pgaudit_version": "0.1.0", "python": "3.11.7", "torch": "…", "art": "…",
                 "timm": "…", "seed": 0, "device": "cpu", "started": "…", "seconds": 12.3,
                 "command": "pgaudit attack …"}
    }

Metric names: ``image_auroc``, ``pixel_auroc``, ``aupro``, ``image_f1_max``, ``pixel_f1_max``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pgaudit.errors import PgauditError

#: Bootstrap resamples for the 95 % intervals of every metric, in the API and the CLI alike.
DEFAULT_BOOTSTRAP = 200

SCHEMA = "pgaudit.results/1"
METRIC_NAMES = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
REQUIRED_KEYS = ("schema", "model", "data", "suite", "clean", "attacks", "robust", "meta")


def metric_entry(
    value: float | None, reason: str | None = None, ci: tuple[float, float] | None = None
) -> dict[str, Any]:
    """One metric as stored in results.json."""
    if value is None and not reason:
        raise ValueError("an undefined metric needs a reason")
    return {
        "value": None if value is None else float(value),
        "ci": None if ci is None else [float(ci[0]), float(ci[1])],
        "reason": reason,
    }


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results.json (or the audit folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise PgauditError(
            f"{path} does not exist: pass the results.json written by `pgaudit attack` "
            "(or the audit folder that holds it)."
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PgauditError(
            f"{path} is not valid JSON ({exc}): re-run `pgaudit attack` to write it again."
        ) from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        found = results.get("schema") if isinstance(results, dict) else type(results).__name__
        raise PgauditError(
            f"{path} is not a pgaudit results file (schema {found!r}, expected {SCHEMA!r}): "
            "pass the results.json written by `pgaudit attack`."
        )
    missing = [k for k in REQUIRED_KEYS if k not in results]
    if missing:
        raise PgauditError(
            f"{path} lacks the section(s) {', '.join(missing)}: it is incomplete or was edited; "
            "re-run `pgaudit attack`."
        )
    return results


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """Write results.json atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
