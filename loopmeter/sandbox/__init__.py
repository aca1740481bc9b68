"""Sandboxes built from policies: bubblewrap runner, egress proxy, limits, self-test.

`make_runner("bwrap")` fails closed with the install hint; `make_runner("none")` runs
unsandboxed only when asked for by name, and the audit log says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loopmeter.sandbox.errors import SandboxUnavailable

if TYPE_CHECKING:
    from loopmeter.sandbox.runner import Runner

__all__ = ["SandboxUnavailable", "make_runner"]


def make_runner(kind: str = "bwrap", *, store: Any = None, audit: Any = None) -> Runner:
    from loopmeter.sandbox.runner import make_runner as _make

    return _make(kind, store=store, audit=audit)
