"""pgaudit: audit and harden visual anomaly detectors against adversarial attacks.

The API (:mod:`pgaudit.api`): ``load_detector``, ``audit`` (``plan_audit``), ``harden``
(``plan_hardening``, ``recipe_changes``), ``render_report``, ``check_gate``. They are imported on first use, so ``import pgaudit`` (and ``pgaudit --help``)
stays fast.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "audit", "check_gate", "harden", "load_detector", "plan_audit", "plan_hardening",
    "recipe_changes", "render_report",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pgaudit import api

        return getattr(api, name)
    raise AttributeError(f"module 'pgaudit' has no attribute {name!r}")
