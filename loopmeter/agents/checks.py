"""Verify: the task's tests are put into the worktree only for the check, then taken out again."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TAIL_CHARS = 4000


@contextmanager
def task_tests_in(worktree: Path, tests_dir: Path | None) -> Iterator[None]:
    """Copy `tests_dir` to `worktree/tests/` for the block; restore what was there before."""
    if tests_dir is None:
        yield
        return
    created: list[Path] = []
    overwritten: dict[Path, bytes] = {}
    made_dirs: list[Path] = []
    try:
        for src in sorted(tests_dir.rglob("*")):
            dest = worktree / "tests" / src.relative_to(tests_dir)
            if src.is_dir():
                if not dest.exists():
                    dest.mkdir(parents=True)
                    made_dirs.append(dest)
                continue
            if not dest.parent.exists():
                dest.parent.mkdir(parents=True)
                made_dirs.append(dest.parent)
            if dest.is_file():
                overwritten[dest] = dest.read_bytes()
            else:
                created.append(dest)
            shutil.copy2(src, dest)
        yield
    finally:
        for path in created:
            path.unlink(missing_ok=True)
        for path, data in overwritten.items():
            path.write_bytes(data)
        for path in sorted(made_dirs, key=lambda p: len(p.parts), reverse=True):
            shutil.rmtree(path, ignore_errors=True)
        _drop_caches(worktree / "tests")


def remove_task_tests(worktree: Path, tests_dir: Path | None) -> None:
    """Before an act: make sure no task test file is left behind (e.g. after a crash mid-check)."""
    if tests_dir is None:
        return
    for src in tests_dir.rglob("*"):
        if src.is_file():
            dest = worktree / "tests" / src.relative_to(tests_dir)
            if dest.is_file() and dest.read_bytes() == src.read_bytes():
                dest.unlink()


def _drop_caches(root: Path) -> None:
    # the check leaves __pycache__ / .pytest_cache behind; they are not the agent's work
    if not root.exists():
        return
    for cache in [*root.rglob("__pycache__"), *root.rglob(".pytest_cache")]:
        shutil.rmtree(cache, ignore_errors=True)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def output_tail(stdout: str, stderr: str, limit: int = TAIL_CHARS) -> str:
    text = stdout + (("\n" + stderr) if stderr else "")
    return text[-limit:]
