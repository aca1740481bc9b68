"""Validate a task without any agent: the reference solution passes its check, the bare repo fails.

Used by `loopmeter eval validate` and the gold-suite tests. The check runs through a
`run_check(argv, workdir, timeout_s) -> (exit_code, output)` callable, by default a
plain subprocess; `sandbox_check(runner, policy)` runs it in the sandbox instead.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopmeter.evals.task import Task, copy_repo, copy_solution, install_tests, solve_script

# (argv, workdir, timeout_s, read-only paths the command needs) -> (exit code, output tail)
CheckRunner = Callable[[list[str], Path, float, Sequence[Path]], tuple[int, str]]


def plain_check(argv: list[str], workdir: Path, timeout_s: float, ro_binds: Sequence[Path] = ()) -> tuple[int, str]:
    try:
        out = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=timeout_s,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return out.returncode, (out.stdout + out.stderr)[-2000:]


def sandbox_check(runner: Any, policy: Any) -> CheckRunner:
    """A CheckRunner that goes through a loopmeter.sandbox runner (role 'check')."""
    def run(argv: list[str], workdir: Path, timeout_s: float, ro_binds: Sequence[Path] = ()) -> tuple[int, str]:
        res = runner.run(argv, workdir=workdir, policy=policy, role="check", actor="check", timeout_s=timeout_s,
                         extra_ro_binds=list(ro_binds))
        return res.exit_code, (res.stdout + res.stderr)[-2000:]

    return run


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


def validate_task(task: Task, run_check: CheckRunner = plain_check, timeout_s: float = 60.0) -> Validation:
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
