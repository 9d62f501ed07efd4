"""Ctrl-C that is never lost: a SIGINT handler that also remembers the interrupt.

CPython turns Ctrl-C into a KeyboardInterrupt wherever the main thread happens to be; when that
is inside a callback whose exceptions CPython ignores (the at-fork hooks run while a DataLoader
starts its workers: "Exception ignored in: _releaseLock"), the interrupt is printed and dropped,
and a training run that should stop goes on to its end. Inside :func:`remembering_ctrl_c` the
interrupt is also recorded; long loops call :func:`raise_if_interrupted` once per step, which
raises it again if it was swallowed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_pending = False


def _handler(signum: int, frame: Any) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembering_ctrl_c() -> Iterator[None]:
    """Install the remembering SIGINT handler for the block (main thread only; else a no-op)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending = False
    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending = False


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C arrived (and was swallowed) since the block began."""
    if _pending:
        raise KeyboardInterrupt
