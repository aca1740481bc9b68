"""The sandbox runner as the loop hands it to agents and checks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TracedRunner:
    """The sandbox runner, with a `sandbox.exec` span around every command and the git
    layout of the run's worktrees from loopmeter's records (see hostgit)."""

    def __init__(self, inner: Any, tracer: Any, git_layout: Callable[[Path], Any]):
        self.inner = inner
        self.tracer = tracer
        self.git_layout = git_layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, argv: list[str], **kw: Any) -> Any:
        from loopmeter.telemetry.otel import ATTEMPT_ID, RUN_ID

        attrs = {"loopmeter.sandbox.role": kw.get("role", ""), "loopmeter.sandbox.actor": kw.get("actor", ""),
                 "process.command": os.path.basename(argv[0]) if argv else ""}
        if kw.get("run_id"):
            attrs[RUN_ID] = kw["run_id"]
        if kw.get("attempt_id"):
            attrs[ATTEMPT_ID] = kw["attempt_id"]
        if kw.get("git") is None and kw.get("workdir") is not None:
            kw["git"] = self.git_layout(Path(kw["workdir"]))
        with self.tracer.start_as_current_span("sandbox.exec", attributes=attrs) as span:
            res = self.inner.run(argv, **kw)
            span.set_attribute("process.exit.code", res.exit_code)
            if res.timed_out or res.killed_reason:
                span.set_attribute("loopmeter.sandbox.killed", res.killed_reason or "timeout")
            return res
