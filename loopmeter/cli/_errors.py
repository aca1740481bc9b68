"""How the CLI turns exceptions into one line, a hint and an exit code."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from loopmeter.errors import LoopmeterError


def _debug() -> bool:
    return os.environ.get("LOOPMETER_DEBUG") == "1" or "--debug" in sys.argv


def _as_loopmeter_error(exc: BaseException) -> LoopmeterError | None:
    """Known failures from libraries, said the way a person needs to hear them."""
    text = str(exc)
    if type(exc).__name__ == "OperationalError" and "database is locked" in text:
        return LoopmeterError(
            "the store is locked by another process (database is locked)",
            hint="wait for the other loopmeter command to finish, or use PostgreSQL via LOOPMETER_DB_URL for teams",
        )
    return None


def report(exc: BaseException) -> int:
    if _debug():
        traceback.print_exception(exc)
    exc = _as_loopmeter_error(exc) or exc
    if isinstance(exc, LoopmeterError):
        typer.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    if not _debug():
        typer.echo("hint: run again with --debug for the traceback, and report it if it looks like a bug", err=True)
    return 1


def run_app(app: typer.Typer) -> int:
    try:
        app(prog_name="loopmeter")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - the one place that reports everything
        cause = exc
        # Typer/Click may wrap ours; report the LoopmeterError inside if there is one.
        while not isinstance(cause, LoopmeterError) and cause.__cause__ is not None:
            cause = cause.__cause__
        return report(cause if isinstance(cause, LoopmeterError) else exc)
    return 0
