"""The `nop` backend: changes nothing. A task that nop passes is broken."""

from __future__ import annotations

from loopmeter.agents.base import StepContext, StepResult


class NopBackend:
    name = "nop"
    description = "changes nothing (a task it passes is broken)"

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        return True, None

    def step(self, ctx: StepContext) -> StepResult:
        return StepResult(exit_code=0, summary="nop: no changes made")
