"""Sandbox errors (kept light: the CLI imports this at start-up)."""

from __future__ import annotations

from loopmeter.errors import LoopmeterError


class SandboxUnavailable(LoopmeterError):
    """The sandbox cannot start here (no bubblewrap, or user namespaces blocked). Fails closed."""

    exit_code = 125
