"""Task directory helpers: hidden tests in and out of a worktree, solution copies, suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopmeter.errors import ConfigError
from loopmeter.evals.suite import load_suite
from loopmeter.tasks import (
    copy_repo,
    copy_solution,
    install_tests,
    load_task,
    remove_tests,
    solve_script,
)
from tests.evals.conftest import GOLD


def test_hidden_tests_are_installed_then_removed_restoring_what_was_there(tmp_path: Path) -> None:
    task_dir = tmp_path / "task"
    (task_dir / "repo" / "tests").mkdir(parents=True)
    (task_dir / "repo" / "tests" / "test_a.py").write_text("visible\n")
    (task_dir / "tests").mkdir()
    (task_dir / "tests" / "test_a.py").write_text("hidden a\n")
    (task_dir / "tests" / "test_b.py").write_text("hidden b\n")
    (task_dir / "task.toml").write_text('id = "t"\ninstruction = "x"\ncheck = "true"\n')
    task = load_task(task_dir)
    work = copy_repo(task, tmp_path / "w")
    (work / "tests" / "test_a.py").write_text("edited by the agent\n")
    installed = install_tests(task, work)
    assert (work / "tests" / "test_a.py").read_text() == "hidden a\n"  # the hidden copy wins for the check
    assert (work / "tests" / "test_b.py").read_text() == "hidden b\n"
    remove_tests(installed)
    assert not (work / "tests" / "test_b.py").exists()
    assert (work / "tests" / "test_a.py").read_text() == "edited by the agent\n"  # the agent's bytes come back


def test_tests_dir_created_for_the_check_is_gone_afterwards(tmp_path: Path) -> None:
    task = load_task(GOLD / "fix-pagination")
    work = copy_repo(task, tmp_path / "w")
    installed = install_tests(task, work)
    assert [p.name for p in installed.files] == ["test_hidden_pager.py"]
    remove_tests(installed)
    assert not (work / "tests").exists()
    assert work.is_dir()


def test_solution_copies_files_or_names_its_script(tmp_path: Path) -> None:
    task = load_task(GOLD / "refactor-shared-tax")
    work = copy_repo(task, tmp_path / "w")
    written = copy_solution(task, work)
    assert {p.name for p in written} == {"tax.py", "cart.py", "invoice.py"}
    assert "apply_tax" in (work / "shop" / "cart.py").read_text()
    shell = load_task(GOLD / "shell-rotate-backups")
    assert solve_script(shell) is not None and copy_solution(shell, work) == []


def test_suite_toml_lists_tasks_and_a_plain_directory_works_too(tmp_path: Path) -> None:
    gold = load_suite(GOLD / "suite.toml", check_requires=False)
    assert gold.name == "gold" and len(gold.tasks) == 13
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("fix-pagination", "fix-lru-cache"):
        (plain / name).symlink_to(GOLD / name)
    suite = load_suite(plain)
    assert suite.name == "plain" and sorted(t.id for t in suite.tasks) == ["fix-lru-cache", "fix-pagination"]
    single = load_suite(GOLD / "fix-pagination")
    assert [t.id for t in single.tasks] == ["fix-pagination"]


def test_suite_toml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "suite.toml"
    bad.write_text('tasks = "not-a-list"\n')
    with pytest.raises(ConfigError) as info:
        load_suite(bad)
    assert str(bad) in info.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError):
        load_suite(tmp_path / "empty")
