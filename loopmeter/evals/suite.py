"""Suites: a directory of task directories, or a `suite.toml` listing them.

    suite.toml    name, description (optional), tasks = ["dir", ...] relative to the file

`gold` names the suite shipped inside the package (loopmeter/evals/gold/).
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from loopmeter.errors import ConfigError
from loopmeter.tasks import Task, load_task

GOLD_DIR = Path(__file__).resolve().parent / "gold"
BUILTIN_SUITES = {"gold": GOLD_DIR, "model-arith": Path(__file__).resolve().parent / "examples" / "model-arith"}


@dataclass
class Suite:
    name: str
    path: Path
    tasks: list[Task]
    description: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (task id, why)

    @property
    def kind(self) -> str:
        kinds = {t.kind for t in self.tasks}
        return kinds.pop() if len(kinds) == 1 else "mixed"


def _from_toml(toml_path: Path) -> tuple[str, str, list[Path]]:
    try:
        data = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path}: {exc}") from exc
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"{toml_path}: 'tasks' must be a list of task directory names",
                          hint='tasks = ["fix-bug", "add-feature"]')
    base = toml_path.parent
    return str(data.get("name", base.name)), str(data.get("description", "")), [base / t for t in tasks]


def load_suite(ref: str | Path, *, check_requires: bool = True) -> Suite:
    """Load `gold`, a directory of tasks (with or without suite.toml), a suite.toml, or one task directory.

    Tasks whose `requires` executables are missing (e.g. node) are left out and listed in `skipped`.
    """
    text = str(ref)
    path = BUILTIN_SUITES.get(text, Path(text).expanduser())
    if path.is_file() and path.name.endswith(".toml") and path.name != "task.toml":
        name, description, dirs = _from_toml(path)
        path = path.parent
    elif path.is_dir() and (path / "suite.toml").is_file():
        name, description, dirs = _from_toml(path / "suite.toml")
    elif path.is_dir() and (path / "task.toml").is_file():
        name, description, dirs = path.name, "", [path]
    elif path.is_dir():
        dirs = sorted(p for p in path.iterdir() if (p / "task.toml").is_file())
        if not dirs:
            raise ConfigError(f"{path}: no task directories (subdirectories with task.toml) found",
                              hint="a suite is a directory of tasks or a suite.toml; try `loopmeter eval run gold`")
        name, description = path.name, ""
    else:
        raise ConfigError(f"unknown suite '{text}': not a built-in suite, directory or suite.toml",
                          hint="built-in suites: " + ", ".join(sorted(BUILTIN_SUITES))
                          + "; or give a directory of tasks or a suite.toml")
    tasks: list[Task] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for d in dirs:
        task = load_task(d)
        if task.id in seen:
            raise ConfigError(f"{d}/task.toml: duplicate task id '{task.id}' in suite {name}")
        seen.add(task.id)
        missing = [exe for exe in task.requires if check_requires and shutil.which(exe) is None]
        if missing:
            skipped.append((task.id, "requires " + ", ".join(missing)))
            continue
        tasks.append(task)
    return Suite(name=name, path=path.resolve(), tasks=tasks, description=description, skipped=skipped)
