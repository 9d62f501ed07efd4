"""User-facing errors: one clear sentence naming the file and the fix, exit code 2."""

from __future__ import annotations


class PgauditError(Exception):
    """An error caused by the user's input (files, options); the CLI prints it without a traceback.

    The message must be one sentence that names the offending path or option and says how to fix it.
    """

    exit_code: int = 2
