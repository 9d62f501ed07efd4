"""Checks of parameter values shared by the library (and so by the CLI, which words them with its
options): each raises a :class:`~pgaudit.errors.ParameterError` naming the parameter and the fix.

Output paths are checked before any work starts, so a run never ends in a write it cannot make.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pgaudit.errors import ParameterError


def check_at_least(
    name: str, value: int, minimum: int = 1, *, meaning: str = "", fix: str = ""
) -> None:
    """``value`` must be at least ``minimum`` (``meaning``: what ``minimum`` does; ``fix``: an
    alternative to say)."""
    if value < minimum:
        hint = f" ({minimum}: {meaning})" if meaning else ""
        tail = f"; {fix}" if fix else ""
        raise ParameterError(f"{name} {value} must be at least {minimum}{hint}{tail}.", name)


def check_seed(seed: int, name: str = "seed") -> None:
    """A random seed: 0 or more (NumPy refuses negative seeds)."""
    if seed < 0:
        raise ParameterError(f"{name} {seed} must be 0 or more: pick a non-negative seed.", name)


def check_positive(name: str, value: float, example: str) -> None:
    """A positive, finite number (not nan, not inf), e.g. a learning rate."""
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(
            f"{name} {value:g} must be a positive, finite number, e.g. {example}.", name
        )


def check_finite(name: str, value: float) -> None:
    """Any finite number (not nan, not inf)."""
    if not math.isfinite(value):
        raise ParameterError(f"{name} {value:g} must be a finite number.", name)


def check_linf_eps(name: str, eps: float) -> None:
    """An L∞ budget on [0, 1] images: positive, finite and below 1 (1 allows any image)."""
    check_positive(name, eps, "8/255")
    if eps >= 1:
        k = eps * 255  # as the user likely typed it: 1, 300/255 or 1.5
        label = f"{eps:g}" if eps == int(eps) or abs(k - round(k)) > 1e-6 else f"{round(k)}/255"
        raise ParameterError(
            f"{name} {label} is an L∞ budget on images in [0, 1] and must be below 1 "
            "(at 1 any image is allowed): use e.g. 8/255.",
            name,
        )


def _subject(name: str | None, path: Path) -> str:
    return f"{name} {path}" if name else str(path)


def _mention(name: str | None) -> tuple[str, ...]:
    return (name,) if name else ()


def _check_writable_at(path: Path, name: str | None) -> None:
    """The nearest existing folder above ``path`` must be a writable folder."""
    above = path.parent if path.parent != path else path
    while not above.exists() and above.parent != above:
        above = above.parent
    if not above.is_dir():
        raise ParameterError(
            f"{_subject(name, path)}: {above} is a file, not a folder; pick another location.",
            *_mention(name),
        )
    if not os.access(above, os.W_OK | os.X_OK):
        raise ParameterError(
            f"{_subject(name, path)}: the folder {above} is not writable; pick a writable location.",
            *_mention(name),
        )


def check_out_folder(path: str | Path, name: str | None = "out") -> Path:
    """``path`` is where a folder will be written: not an existing file, and writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ParameterError(
            f"{_subject(name, path)} is an existing file but must be a folder: pick a folder path "
            "or remove the file.",
            *_mention(name),
        )
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ParameterError(
                f"{_subject(name, path)}: the folder is not writable; pick a writable location.",
                *_mention(name),
            )
    else:
        _check_writable_at(path, name)
    return path


def check_out_file(path: str | Path, name: str | None = "out") -> Path:
    """``path`` is where a file will be written: not an existing folder, in a writable folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ParameterError(
            f"{_subject(name, path)} is an existing folder but must be a file: give a file path "
            f"such as {path / 'model.pt'}.",
            *_mention(name),
        )
    _check_writable_at(path, name)
    return path
