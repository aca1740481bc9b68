"""The task format, for code that still imports it from here: its one definition is `loopmeter/tasks.py`."""

from loopmeter.tasks import (
    KNOWN_KEYS,
    InstalledTests,
    Task,
    copy_repo,
    copy_solution,
    copy_task_repo,
    inside_task,
    install_test_dir,
    install_tests,
    load_task,
    remove_leftover_tests,
    remove_tests,
    solve_script,
    task_policy,
)

__all__ = ["KNOWN_KEYS", "InstalledTests", "Task", "copy_repo", "copy_solution", "copy_task_repo", "inside_task",
           "install_test_dir", "install_tests", "load_task", "remove_leftover_tests", "remove_tests",
           "solve_script", "task_policy"]
