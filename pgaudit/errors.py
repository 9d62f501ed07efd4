"""User-facing errors: one clear sentence naming the file and the fix, exit code 2."""

from __future__ import annotations

import re
from collections.abc import Mapping


class PgauditError(Exception):
    """An error caused by the user's input (files, options); the CLI prints it without a traceback.

    The message must be one sentence that names the offending path or option and says how to fix it.
    Raised in a DataLoader worker, torch re-raises it as ``PgauditError("Caught PgauditError in
    DataLoader worker process 0. Original Traceback …")``: the original sentence is kept.
    """

    exit_code: int = 2

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(_from_worker(message), *args)


def _from_worker(message: object) -> object:
    """The original sentence of an error torch re-raised from a DataLoader worker (else as is)."""
    text = message if isinstance(message, str) else ""
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return message
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    kind, _, sentence = last.partition(": ")
    return sentence if sentence and kind.endswith(("Error", "Interrupted")) else last


class ParameterError(PgauditError):
    """A bad value of the Python API: the message names parameters as Python spells them.

    ``ParameterError("batch_size 0 must be at least 1.", "batch_size")``; the CLI words the same
    error with its options (:meth:`for_cli`: ``--batch-size 0 must be at least 1.``). Each name
    given rewrites one mention, the first not yet rewritten: name a parameter twice when the
    message mentions it twice (``"device cuda: no GPU here; use device cpu."``).
    """

    def __init__(self, message: str, *parameters: str) -> None:
        super().__init__(message)
        self.mentions = parameters
        self.parameters = tuple(dict.fromkeys(parameters))  # the parameters at fault, once each

    def for_cli(self, options: Mapping[str, str] | None = None) -> str:
        """The message with each mention named replaced by its option (default ``--a-b``)."""
        text = str(self)
        for name in self.mentions:
            option = (options or {}).get(name, "--" + name.replace("_", "-"))
            # Not inside a word, a path or a file name (``/tmp/out/x.pt`` keeps its ``out``).
            pattern = rf"(?<![\w./\\-]){re.escape(name)}(?![\w/\\-]|\.\w)"
            text = re.sub(pattern, option, text, count=1)
        return text


class Interrupted(ParameterError):
    """The user stopped a command (Ctrl-C): the message says what was kept; exit code 130. It may
    name parameters (``resume``) as a :class:`ParameterError` does, for the CLI to word."""

    exit_code = 130
