"""Perturbation budgets written the way papers write them: ``8/255``, ``0.03``, ``1.5``."""

from __future__ import annotations

from pgaudit.errors import PgauditError

#: Budgets closer than this to k/255 are labelled as the fraction.
_LABEL_TOLERANCE = 1e-6


def parse_eps(text: str | float, *, option: str = "--eps") -> float:
    """Parse one budget: ``"8/255"`` -> 0.031372…, ``"0.5"`` -> 0.5; positive and finite.

    Raises :class:`PgauditError` naming ``option`` when the text is not a positive number or
    fraction.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip()
        try:
            if "/" in raw:
                num, den = raw.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(raw)
        except (ValueError, ZeroDivisionError):
            raise PgauditError(
                f"{option} {text!r} is not a number: write a fraction such as 8/255 or a decimal "
                "such as 0.03."
            ) from None
    if not value > 0 or value == float("inf"):
        raise PgauditError(
            f"{option} {text!r} must be a positive, finite budget: write e.g. 8/255 or 0.03."
        )
    return value


def parse_eps_list(text: str, *, option: str = "--eps") -> list[float]:
    """Parse a comma-separated list of budgets (``"2/255,4/255,8/255"``), sorted, duplicates dropped."""
    parts = [p for p in (s.strip() for s in str(text).split(",")) if p]
    if not parts:
        raise PgauditError(
            f"{option} is empty: give one or more budgets such as 8/255 or 2/255,8/255."
        )
    values: list[float] = []
    for part in parts:
        value = parse_eps(part, option=option)
        if not any(abs(value - v) <= _LABEL_TOLERANCE for v in values):
            values.append(value)
    return sorted(values)


def eps_label(eps: float) -> str:
    """Human label of a budget: ``8/255`` for multiples of 1/255, else up to 4 significant digits."""
    k = eps * 255
    if abs(k - round(k)) <= _LABEL_TOLERANCE * 255 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


def eps_slug(eps: float) -> str:
    """The budget as it appears in attack ids: ``8_255``, ``1.71``."""
    return eps_label(eps).replace("/", "_")


def default_step_size(eps: float, steps: int) -> float:
    """The PatchGuard/Madry PGD step: ``2.5 · ε / steps`` (the one rule for every PGD here)."""
    return 2.5 * eps / max(1, steps)
