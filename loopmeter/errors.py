"""Errors meant for people: one line, a hint, an exit code (2 = bad input)."""

from __future__ import annotations


class LoopmeterError(Exception):
    """An error the CLI prints as one line plus a hint, without a traceback."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(LoopmeterError):
    """A configuration or input file is wrong; the message names file, line and field."""


class StoreError(LoopmeterError):
    """The store cannot be opened or written (locked, unreachable, newer schema)."""
