"""A task: what the loop runs and evals score. The format is a directory with `task.toml`, `repo/`, `tests/`, `solution/`.

    task.toml     id, title, instruction (or instruction.md), check, time_limit_s,
                  tags, human_hours (optional, used by ROI), kind = "repo" | "model"
    repo/         the starting files (made a git repo at run time)
    tests/        copied into the worktree only after the agent finishes
    solution/     files the `oracle` backend copies over the worktree (or solve.sh)

Model tasks (`kind = "model"`) have `dataset` (JSONL of {input, target}) and
`scorer` instead of a repo. See docs/evals.md.

It lives outside `evals/` because the loop (`agents/`) needs it too: `run --task`, the
verify step's hidden tests and the oracle read it, and `agents/` imports nothing from `evals/`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter import safefs
from loopmeter.errors import ConfigError

if TYPE_CHECKING:
    from loopmeter.policies import Policy

KNOWN_KEYS = {
    "id", "title", "instruction", "check", "time_limit_s", "tags", "human_hours", "kind",
    "dataset", "scorer", "scorer_args", "requires", "policy", "difficulty", "setup",
}


@dataclass
class Task:
    id: str
    title: str
    instruction: str
    check: str
    path: Path | None = None
    kind: str = "repo"
    time_limit_s: float = 600.0
    tags: list[str] = field(default_factory=list)
    human_hours: float | None = None
    requires: list[str] = field(default_factory=list)  # executables needed, e.g. ["node"]
    policy: str | None = None
    difficulty: str | None = None
    dataset: Path | None = None
    scorer: str | None = None
    scorer_args: dict[str, Any] = field(default_factory=dict)

    @property
    def repo_dir(self) -> Path | None:
        return self._own_dir("repo")

    @property
    def tests_dir(self) -> Path | None:
        return self._own_dir("tests")

    @property
    def solution_dir(self) -> Path | None:
        return self._own_dir("solution")

    def _own_dir(self, name: str) -> Path | None:
        if self.path is None or not (self.path / name).is_dir():
            return None
        return inside_task(self.path, self.path / name)


def inside_task(task_dir: Path, path: Path) -> Path:
    """`path` when, links resolved, it stays inside `task_dir`; a task may not point at host files."""
    real = path.resolve()
    if not real.is_relative_to(task_dir.resolve()):
        raise ConfigError(f"{path} leads outside the task directory (to {real})",
                          hint="a task may use only its own files; replace the link with the files themselves")
    return path


def load_task(path: Path) -> Task:
    path = Path(path).resolve()
    toml_path = path / "task.toml"
    if not toml_path.is_file():
        raise ConfigError(f"{path}: not a task directory (no task.toml)",
                          hint="a task is a directory with task.toml, repo/, tests/ and solution/")
    try:
        data = tomllib.loads(inside_task(path, toml_path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path}: {exc}") from exc
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{toml_path}: unknown key(s) {', '.join(sorted(unknown))}",
                          hint="known keys: " + ", ".join(sorted(KNOWN_KEYS)))
    instruction = data.get("instruction")
    if instruction is None and (path / "instruction.md").is_file():
        instruction = inside_task(path, path / "instruction.md").read_text()
    kind = data.get("kind", "repo")
    for key in ("id",) + (("check",) if kind == "repo" else ("dataset", "scorer")):
        if key not in data:
            raise ConfigError(f"{toml_path}: missing required key '{key}'")
    if kind == "repo" and not instruction:
        raise ConfigError(f"{toml_path}: missing 'instruction' (or an instruction.md beside it)")
    task = Task(
        id=str(data["id"]),
        title=str(data.get("title", data["id"])),
        instruction=str(instruction or ""),
        check=str(data.get("check", "")),
        path=path,
        kind=kind,
        time_limit_s=float(data.get("time_limit_s", 600)),
        tags=list(data.get("tags", [])),
        human_hours=data.get("human_hours"),
        requires=list(data.get("requires", [])),
        policy=data.get("policy"),
        difficulty=data.get("difficulty"),
        dataset=inside_task(path, path / str(data["dataset"])).resolve() if data.get("dataset") else None,
        scorer=data.get("scorer"),
        scorer_args=dict(data.get("scorer_args", {})),
    )
    _ = (task.repo_dir, task.tests_dir, task.solution_dir)  # a link out of the task fails here, early
    return task


# -- working with a task's directories (used by the loop's verify step, the oracle and `eval validate`) --
#
# A worktree is written by sandboxed code and a task directory is somebody else's input, so every
# copy and removal here goes through loopmeter.safefs: no link is followed, nothing outside the
# worktree is written or deleted.

TESTS_DEST = "tests"  # tests/ lands at <worktree>/tests/, merged with any tests the repo already has
CACHE_DIRS = frozenset({"__pycache__", ".pytest_cache"})  # what a check leaves behind in tests/


@dataclass
class InstalledTests:
    """What `install_tests` changed in a worktree, so `remove_tests` can undo exactly that.

    Paths are relative to `root`; `overwritten` keeps what was there before (a file's bytes,
    or a link, which is put back as a link)."""

    root: Path
    created: list[str] = field(default_factory=list)
    overwritten: dict[str, safefs.Node] = field(default_factory=dict)
    made_dirs: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [self.root / rel for rel in [*self.created, *self.overwritten]]


def install_tests(task: Task, workdir: Path) -> InstalledTests:
    """Copy the hidden tests into <workdir>/tests/ for a check (a hidden file wins over the worktree's)."""
    return install_test_dir(task.tests_dir, workdir)


def install_test_dir(tests_dir: Path | None, workdir: Path) -> InstalledTests:
    """Copy `tests_dir` into <workdir>/tests/. A link on the way (`tests/` itself, a folder in it)
    raises safefs.UnsafePath, after undoing what was already copied."""
    done = InstalledTests(Path(workdir))
    if tests_dir is None:
        return done
    try:
        for rel, kind in safefs.walk(tests_dir):
            dest = f"{TESTS_DEST}/{rel}"
            if kind == "dir":
                safefs.make_dirs(done.root, dest, done.made_dirs)
                continue
            before = safefs.read(done.root, dest)
            safefs.copy_file(tests_dir, rel, done.root, dest, done.made_dirs)
            if before is None:
                done.created.append(dest)
            else:
                done.overwritten[dest] = before
    except BaseException:
        remove_tests(done)
        raise
    return done


def remove_tests(installed: InstalledTests) -> list[str]:
    """Undo `install_tests`: delete what it created, put back what it overwrote, drop the caches a
    check leaves in tests/. Nothing is followed: a path the check turned into a link (or put a
    link above) is left alone and named in the returned list of problems."""
    root, problems = installed.root, []
    undo: list[tuple[Callable[..., object], tuple[object, ...]]] = [
        *((safefs.remove, (root, rel)) for rel in reversed(installed.created)),
        *((safefs.write, (root, rel, before)) for rel, before in installed.overwritten.items()),
        *((safefs.remove, (root, rel))
          for rel in sorted(set(installed.made_dirs), key=lambda r: r.count("/"), reverse=True)),
    ]
    for action, args in undo:
        try:
            action(*args)
        except (safefs.UnsafePath, OSError) as exc:
            problems.append(str(exc))
    safefs.remove_dirs_named(root, TESTS_DEST, CACHE_DIRS)
    if safefs.is_empty_dir(root, TESTS_DEST):
        safefs.remove(root, TESTS_DEST)
    return problems


def remove_leftover_tests(tests_dir: Path | None, workdir: Path) -> list[str]:
    """Delete hidden test files still in <workdir>/tests/ with their exact bytes (e.g. after a crash
    mid-check); return what was removed. Links are neither followed nor removed."""
    removed: list[str] = []
    if tests_dir is None:
        return removed
    for rel, kind in safefs.walk(tests_dir):
        dest = f"{TESTS_DEST}/{rel}"
        try:
            here = safefs.read(Path(workdir), dest)
        except safefs.UnsafePath:
            continue  # a link on the way: no file of ours is behind it
        if kind == "file" and here is not None and here.kind == "file":
            source = safefs.read(tests_dir, rel)
            if source is not None and source.data == here.data:
                safefs.remove(Path(workdir), dest)
                removed.append(dest)
    return removed


def solve_script(task: Task) -> Path | None:
    """solution/solve.sh when the reference solution is a script (run with cwd = worktree)."""
    sol = task.solution_dir
    return sol / "solve.sh" if sol and (sol / "solve.sh").is_file() else None


def copy_solution(task: Task, workdir: Path) -> list[Path]:
    """Copy solution/ files over the worktree at the same relative paths (no-op for a solve.sh solution)."""
    if task.solution_dir is None or solve_script(task) is not None:
        return []
    return [Path(workdir) / rel for rel in safefs.copy_tree(task.solution_dir, Path(workdir))]


def copy_repo(task: Task, dest: Path) -> Path:
    """The task's starting files in `dest` (not yet a git repo)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if task.repo_dir is not None:
        copy_task_repo(task.repo_dir, dest)
    return dest


def copy_task_repo(source: Path, dest: Path) -> None:
    """Copy a task's repo/ into the existing directory `dest`. Links are copied as links; a `.git`
    anywhere in it is refused: git on the host would run programs its config names."""
    planted = [rel for rel, _ in safefs.walk(source) if ".git" in rel.split("/")]
    if planted:
        raise ConfigError(f"{source / planted[0]}: a task's repo/ may not contain .git",
                          hint="loopmeter makes the git repository itself; remove the .git from the task")
    safefs.copy_tree(source, dest)


def task_policy(task: Task, default: str | Path | Policy) -> str | Path | Policy:
    """The task's own policy when it names a shipped preset, else the eval's.

    A task is somebody else's input: a policy file of its own could make the sandbox wider,
    so it is never loaded (review it and pass `--policy FILE` yourself)."""
    from loopmeter.errors import ConfigError
    from loopmeter.policies import PRESETS

    if not task.policy:
        return default
    if task.policy in PRESETS:
        return task.policy
    raise ConfigError(f"{task.path / 'task.toml' if task.path else task.id}: policy = {task.policy!r}: "
                      f"a task may only name a preset ({', '.join(PRESETS)})",
                      hint="a task's own policy file could widen the sandbox; review it and pass --policy FILE")
