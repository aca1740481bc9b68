"""Validate a task without any agent: the reference solution passes its check, the bare repo fails.

Used by `loopmeter eval validate` and the gold-suite tests. A task's check (and its solve.sh) is
code that came with the task, so it runs like every other check: in the sandbox with role
"check" (clean environment, no API keys), through a `CheckRunner` made by `sandbox_check`.
`--sandbox none` gives it the unsandboxed runner, which warns on stderr for every command and
records each one in the audit log; there is no quiet host subprocess.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopmeter.errors import LoopmeterError
from loopmeter.tasks import Task, copy_repo, copy_solution, install_tests, solve_script

# (argv, workdir, timeout_s, read-only paths the command needs) -> (exit code, output tail)
CheckRunner = Callable[[list[str], Path, float, Sequence[Path]], tuple[int, str]]
CHECK_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # as the loop's verify step


def sandbox_check(runner: Any, policy: Any) -> CheckRunner:
    """A CheckRunner that goes through a loopmeter.sandbox runner (role 'check': no secrets, clean env)."""
    def run(argv: list[str], workdir: Path, timeout_s: float, ro_binds: Sequence[Path] = ()) -> tuple[int, str]:
        res = runner.run(argv, workdir=workdir, policy=policy, role="check", actor="check", timeout_s=timeout_s,
                         extra_ro_binds=list(ro_binds), env=dict(CHECK_ENV))
        return res.exit_code, (res.stdout + res.stderr)[-2000:]

    return run


def default_check(task: Task, policy: str = "default", runner: Any = None) -> CheckRunner:
    """The bubblewrap sandbox (fails closed) with the task's own policy, else `policy`."""
    from loopmeter.policies import load_policy
    from loopmeter.sandbox import make_runner
    from loopmeter.tasks import task_policy

    return sandbox_check(runner or make_runner("bwrap"), load_policy(task_policy(task, policy)))


@dataclass
class Validation:
    task_id: str
    solution_passes: bool
    bare_fails: bool
    solution_exit: int
    bare_exit: int
    solution_s: float
    bare_s: float
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.solution_passes and self.bare_fails


def _check_argv(task: Task) -> list[str]:
    return ["sh", "-c", task.check]


def validate_task(task: Task, run_check: CheckRunner | None = None, timeout_s: float = 60.0) -> Validation:
    """Run the check on the bare repo and on the solved one; `run_check` defaults to `default_check(task)`.

    A task that cannot be set up safely (a link out of the task, a link where its tests go)
    is a failed validation naming the problem."""
    run_check = run_check or default_check(task)
    try:
        return _validate(task, run_check, timeout_s)
    except LoopmeterError as exc:
        return Validation(task.id, False, False, 125, 125, 0.0, 0.0, f"{exc.message} ({exc.hint})" if exc.hint
                          else exc.message)


def _validate(task: Task, run_check: CheckRunner, timeout_s: float) -> Validation:
    with tempfile.TemporaryDirectory(prefix=f"lm-validate-{task.id}-") as tmp:
        bare = copy_repo(task, Path(tmp) / "bare")
        install_tests(task, bare)
        t0 = time.perf_counter()
        bare_exit, _ = run_check(_check_argv(task), bare, timeout_s, ())
        bare_s = time.perf_counter() - t0

        solved = copy_repo(task, Path(tmp) / "solved")
        script = solve_script(task)
        if script is not None:
            code, out = run_check(["sh", str(script)], solved, timeout_s, [script.parent])
            if code != 0:
                return Validation(task.id, False, bare_exit != 0, code, bare_exit, 0.0, bare_s, "solve.sh: " + out)
        copy_solution(task, solved)
        install_tests(task, solved)
        t0 = time.perf_counter()
        sol_exit, out = run_check(_check_argv(task), solved, timeout_s, ())
        sol_s = time.perf_counter() - t0
    return Validation(task.id, sol_exit == 0, bare_exit != 0, sol_exit, bare_exit, sol_s, bare_s, out)
