"""Sandbox errors (kept light: the CLI imports this at start-up)."""

from __future__ import annotations

from loopmeter.errors import LoopmeterError


class SandboxUnavailable(LoopmeterError):
    """The sandbox cannot start here (no bubblewrap, or user namespaces blocked). Fails closed.

    Exit 2 like any other set-up problem a person must fix; `sandbox exec` exits 125 instead.
    """

    exit_code = 2
