"""The shipped gold suite: enough tasks, mixed kinds, every one validated (oracle passes, bare repo fails)."""

from __future__ import annotations

import shutil

import pytest

from loopmeter.evals.suite import load_suite
from loopmeter.evals.validate import validate_task

GOLD = load_suite("gold", check_requires=False)


def test_gold_suite_has_at_least_twelve_tasks_of_mixed_kinds() -> None:
    assert len(GOLD.tasks) >= 12
    tags = {tag for t in GOLD.tasks for tag in t.tags}
    for needed in ("bugfix", "feature", "refactor", "failing-test", "cli", "data", "shell", "javascript"):
        assert needed in tags, needed
    assert {t.difficulty for t in GOLD.tasks} == {"easy", "medium", "hard"}
    assert all(t.human_hours and t.human_hours > 0 for t in GOLD.tasks)
    js = [t for t in GOLD.tasks if "javascript" in t.tags]
    assert js and all(t.requires == ["node"] for t in js)


def test_gold_checks_use_no_pytest() -> None:
    for task in GOLD.tasks:
        assert "pytest" not in task.check, task.id


@pytest.mark.parametrize("task", GOLD.tasks, ids=[t.id for t in GOLD.tasks])
def test_gold_task_solution_passes_and_bare_repo_fails(task) -> None:
    missing = [exe for exe in task.requires if shutil.which(exe) is None]
    if missing:
        pytest.skip(f"needs {missing}")
    result = validate_task(task)
    assert result.solution_passes, result.output
    assert result.bare_fails, f"{task.id}: the check passes without the solution"


def test_node_task_is_skipped_when_node_is_absent(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no node
    suite = load_suite("gold")
    assert "js-chunk-array" in dict(suite.skipped)
    assert all(t.id != "js-chunk-array" for t in suite.tasks)


def test_unknown_suite_names_the_built_in_ones() -> None:
    from loopmeter.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_suite("no-such-suite")
    assert "gold" in (info.value.hint or "")
