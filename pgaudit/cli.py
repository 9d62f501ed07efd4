"""The `pgaudit` command line: a thin Typer layer that parses options, calls the API, prints with rich.

Heavy imports (torch, ART) happen inside the commands so `pgaudit --help` stays fast.
Every user error is a :class:`pgaudit.errors.PgauditError`: printed as one red sentence, exit 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from pgaudit import __version__
from pgaudit.errors import PgauditError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="pgaudit",
    help="Audit and harden visual anomaly detectors against adversarial attacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"pgaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Audit and harden visual anomaly detectors against adversarial attacks."""


# --- data commands (pgaudit data check / data synth / masks) ---


# --- train / harden ---


# --- attack ---


# --- report / gate / demo ---


# --- baselines ---


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        rc = app(standalone_mode=False)
    except PgauditError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through as ClickException
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
