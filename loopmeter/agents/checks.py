"""Verify: the task's tests are put into the worktree only for the check, then taken out again.

The check is hostile code running in the sandbox with the worktree writable: it can replace
`tests/` or anything in it with a link to a host path. Copying in and out goes through
loopmeter.safefs (see loopmeter/tasks.py), so no link is followed and nothing outside the worktree
is written or deleted; what could not be restored safely ends the attempt with an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loopmeter.safefs import UnsafePath
from loopmeter.tasks import install_test_dir, remove_leftover_tests, remove_tests

TAIL_CHARS = 4000


@contextmanager
def task_tests_in(worktree: Path, tests_dir: Path | None) -> Iterator[None]:
    """Copy `tests_dir` to `worktree/tests/` for the block; restore what was there before.

    Raises UnsafePath before the block when a link is in the way, and after it when the check
    left a link where loopmeter had to restore a file (the link is left alone, not followed)."""
    if tests_dir is None:
        yield
        return
    installed = install_test_dir(tests_dir, worktree)
    try:
        yield
    finally:
        problems = remove_tests(installed)
    if problems:
        raise UnsafePath("the check changed the task's tests into links; they were not followed: "
                         + "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
                         hint="a check may not replace tests/ (or a folder in it) with a symbolic link")


def remove_task_tests(worktree: Path, tests_dir: Path | None) -> None:
    """Before an act: make sure no task test file is left behind (e.g. after a crash mid-check)."""
    remove_leftover_tests(tests_dir, worktree)


def output_tail(stdout: str, stderr: str, limit: int = TAIL_CHARS) -> str:
    text = stdout + (("\n" + stderr) if stderr else "")
    return text[-limit:]
