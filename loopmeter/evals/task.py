"""The task format: a directory with `task.toml`, `repo/`, `tests/`, `solution/`.

    task.toml     id, title, instruction (or instruction.md), check, time_limit_s,
                  tags, human_hours (optional, used by ROI), kind = "repo" | "model"
    repo/         the starting files (made a git repo at run time)
    tests/        copied into the worktree only after the agent finishes
    solution/     files the `oracle` backend copies over the worktree (or solve.sh)

Model tasks (`kind = "model"`) have `dataset` (JSONL of {input, target}) and
`scorer` instead of a repo. See docs/evals.md.
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopmeter.errors import ConfigError

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
        return self.path / "repo" if self.path and (self.path / "repo").is_dir() else None

    @property
    def tests_dir(self) -> Path | None:
        return self.path / "tests" if self.path and (self.path / "tests").is_dir() else None

    @property
    def solution_dir(self) -> Path | None:
        return self.path / "solution" if self.path and (self.path / "solution").is_dir() else None


def load_task(path: Path) -> Task:
    path = Path(path)
    toml_path = path / "task.toml"
    if not toml_path.is_file():
        raise ConfigError(f"{path}: not a task directory (no task.toml)",
                          hint="a task is a directory with task.toml, repo/, tests/ and solution/")
    try:
        data = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path}: {exc}") from exc
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{toml_path}: unknown key(s) {', '.join(sorted(unknown))}",
                          hint="known keys: " + ", ".join(sorted(KNOWN_KEYS)))
    instruction = data.get("instruction")
    if instruction is None and (path / "instruction.md").is_file():
        instruction = (path / "instruction.md").read_text()
    kind = data.get("kind", "repo")
    for key in ("id",) + (("check",) if kind == "repo" else ("dataset", "scorer")):
        if key not in data:
            raise ConfigError(f"{toml_path}: missing required key '{key}'")
    if kind == "repo" and not instruction:
        raise ConfigError(f"{toml_path}: missing 'instruction' (or an instruction.md beside it)")
    return Task(
        id=str(data["id"]),
        title=str(data.get("title", data["id"])),
        instruction=str(instruction or ""),
        check=str(data.get("check", "")),
        path=path.resolve(),
        kind=kind,
        time_limit_s=float(data.get("time_limit_s", 600)),
        tags=list(data.get("tags", [])),
        human_hours=data.get("human_hours"),
        requires=list(data.get("requires", [])),
        policy=data.get("policy"),
        difficulty=data.get("difficulty"),
        dataset=(path / data["dataset"]).resolve() if data.get("dataset") else None,
        scorer=data.get("scorer"),
        scorer_args=dict(data.get("scorer_args", {})),
    )


# -- working with a task's directories (used by the loop's verify step, the oracle and `eval validate`) --

TESTS_DEST = "tests"  # tests/ lands at <worktree>/tests/, merged with any tests the repo already has


def _copy_tree(src: Path, dest: Path) -> list[Path]:
    """Copy every file under src to dest at the same relative path; return the files written."""
    written: list[Path] = []
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dest / file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
        written.append(target)
    return written


@dataclass
class InstalledTests:
    """What `install_tests` changed in a worktree, so `remove_tests` can undo exactly that."""

    created: list[Path] = field(default_factory=list)
    overwritten: dict[Path, bytes] = field(default_factory=dict)  # path -> the bytes it had before
    made_dirs: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [*self.created, *self.overwritten]


def install_tests(task: Task, workdir: Path) -> InstalledTests:
    """Copy the hidden tests into <workdir>/tests/ for a check (a hidden file wins over the worktree's)."""
    done = InstalledTests()
    if task.tests_dir is None:
        return done
    dest_root = Path(workdir) / TESTS_DEST
    for src in sorted(p for p in task.tests_dir.rglob("*") if p.is_file()):
        dest = dest_root / src.relative_to(task.tests_dir)
        missing = [d for d in [dest.parent, *dest.parent.parents] if not d.exists()]
        done.made_dirs.extend(missing)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_file():
            done.overwritten[dest] = dest.read_bytes()
        else:
            done.created.append(dest)
        shutil.copy2(src, dest)
    return done


def remove_tests(installed: InstalledTests) -> None:
    """Undo `install_tests`: delete what it created, put back what it overwrote, drop caches it caused."""
    for path in installed.created:
        path.unlink(missing_ok=True)
    for path, data in installed.overwritten.items():
        path.write_bytes(data)
    for path in sorted(set(installed.made_dirs), key=lambda p: len(p.parts), reverse=True):
        shutil.rmtree(path, ignore_errors=True)


def solve_script(task: Task) -> Path | None:
    """solution/solve.sh when the reference solution is a script (run with cwd = worktree)."""
    sol = task.solution_dir
    return sol / "solve.sh" if sol and (sol / "solve.sh").is_file() else None


def copy_solution(task: Task, workdir: Path) -> list[Path]:
    """Copy solution/ files over the worktree at the same relative paths (no-op for a solve.sh solution)."""
    if task.solution_dir is None or solve_script(task) is not None:
        return []
    return _copy_tree(task.solution_dir, Path(workdir))


def copy_repo(task: Task, dest: Path) -> Path:
    """The task's starting files in `dest` (not yet a git repo)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if task.repo_dir is not None:
        shutil.copytree(task.repo_dir, dest, dirs_exist_ok=True, symlinks=True)
    return dest
