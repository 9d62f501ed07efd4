"""The attack engine: what ``pgaudit attack`` runs.

Modules (one idea each): ``eps`` (budgets such as ``8/255``), ``objectives`` (detection and
localization objectives, margin losses), ``native`` (torch PGD), ``algorithms`` (an attack
object per algorithm and library, the registry), ``art_bridge`` (ART estimators over a
Detector), ``execute`` (one attack on one batch, re-scored), ``suites``
(quick / standard / full), ``runner`` (:func:`run_audit`: stream the test set, write the audit),
``gallery`` (report PNGs), ``summary`` (the terminal table).

The package import is light (no torch, no ART); the names below load their module on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "parse_eps": "pgaudit.attacks.eps",
    "eps_label": "pgaudit.attacks.eps",
    "AttackSpec": "pgaudit.attacks.suites",
    "make_attack": "pgaudit.attacks.algorithms",
    "Suite": "pgaudit.attacks.suites",
    "build_suite": "pgaudit.attacks.suites",
    "run_audit": "pgaudit.attacks.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pgaudit.attacks' has no attribute {name!r}")
