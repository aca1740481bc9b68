"""The `oracle` backend: applies a task's reference solution (validates tasks).

`solution/solve.sh` runs in the sandbox with cwd = the worktree; otherwise every file
under `solution/` is copied over the worktree at the same relative path.
"""

from __future__ import annotations

from pathlib import Path

from loopmeter.agents.base import StepContext, StepResult
from loopmeter.vocab import StepErrorKind


class OracleBackend:
    name = "oracle"
    description = "applies the task's reference solution (solution/ files or solution/solve.sh)"

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        return True, None

    def step(self, ctx: StepContext) -> StepResult:
        solution = ctx.task.solution_dir if ctx.task is not None else None
        if solution is None:
            return StepResult(exit_code=1, error="oracle needs a task with a solution/ directory (run --task DIR)",
                              error_kind=StepErrorKind.AGENT)
        script = solution / "solve.sh"
        if script.is_file():
            return self._solve_sh(ctx, solution, script)
        copied = copy_over(solution, ctx.workdir)
        return StepResult(exit_code=0, summary=f"oracle: copied {copied} solution file(s)")

    def _solve_sh(self, ctx: StepContext, solution: Path, script: Path) -> StepResult:
        if ctx.sandbox is None:
            return StepResult(exit_code=1, error="oracle: no sandbox runner to run solve.sh",
                              error_kind=StepErrorKind.INFRA)
        res = ctx.sandbox.run(
            ["bash", str(script)], workdir=ctx.workdir, policy=ctx.policy, role="agent",
            actor=ctx.actor or "agent:oracle", timeout_s=ctx.timeout_s, run_id=ctx.run_id,
            attempt_id=ctx.attempt_id, extra_ro_binds=[solution], cancel=ctx.cancel, env=ctx.env or None,
        )
        result = StepResult(exit_code=res.exit_code, summary=f"oracle: solve.sh exited {res.exit_code}",
                            transcript=[{"stdout": res.stdout[-4000:], "stderr": res.stderr[-4000:]}])
        if res.timed_out or res.killed_reason:
            result.error = f"solve.sh killed ({res.killed_reason or 'timeout'})"
            result.error_kind = StepErrorKind.TIMEOUT if res.timed_out else StepErrorKind.BUDGET
            result.stopped_by = res.killed_reason or "timeout"
        elif res.exit_code != 0:
            result.error, result.error_kind = f"solve.sh exited {res.exit_code}", StepErrorKind.AGENT
        return result


def copy_over(source: Path, dest: Path) -> int:
    """Copy `source` over the worktree `dest`; no link in either is followed (loopmeter.safefs)."""
    from loopmeter import safefs

    return len(safefs.copy_tree(source, dest))
