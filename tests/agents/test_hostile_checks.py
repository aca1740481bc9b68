"""A hostile check against the copying of a task's tests in and out of a worktree.

Every attack runs as real sandboxed code (bubblewrap, role "check") in a real git worktree and
tries to make loopmeter's restore step write or delete host files through a symbolic link. A
host folder outside the worktree holds marker files; each test proves they are unchanged, not
created and not deleted. The link targets are host paths: inside the sandbox /tmp is private,
so only loopmeter (on the host) would ever follow them.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from loopmeter import safefs
from loopmeter.agents.checks import remove_task_tests, task_tests_in
from loopmeter.agents.oracle import copy_over
from loopmeter.policies import load_policy
from loopmeter.safefs import UnsafePath
from tests.agents.conftest import git_repo

HIDDEN = "assert True  # the task's hidden test\n"
AGENT = "# the agent's own test file\n"
HOST = "HOST FILE: must never change\n"


@pytest.fixture
def bwrap(store):
    from loopmeter.sandbox import make_runner

    return make_runner("bwrap", store=store)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host folder outside the worktree, with files named like the task's tests and a cache folder."""
    victim = tmp_path / "host"
    (victim / "unit").mkdir(parents=True)
    (victim / "__pycache__").mkdir()
    for rel in ("test_hidden.py", "test_nested.py", "unit/test_nested.py", "__pycache__/keep.pyc", "secret.txt"):
        (victim / rel).write_text(HOST)
    return victim


def host_state(victim: Path) -> dict[str, str]:
    return {str(p.relative_to(victim)): p.read_text() for p in sorted(victim.rglob("*")) if p.is_file()}


@pytest.fixture
def task_tests(tmp_path: Path) -> Path:
    tests = tmp_path / "task" / "tests"
    (tests / "unit").mkdir(parents=True)
    (tests / "test_hidden.py").write_text(HIDDEN)
    (tests / "unit" / "test_nested.py").write_text(HIDDEN)
    return tests


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "wt", "a worktree\n")


def check(runner, worktree: Path, script: str):
    res = runner.run(["sh", "-c", script], workdir=worktree, policy=load_policy("strict"), role="check",
                     actor="check", timeout_s=30)
    assert res.exit_code == 0, res.stderr  # the attack itself ran
    return res


# (name, script run by the check; {host} is the host folder, {rel} its path from the worktree)
SWAPS = [
    ("tests dir -> host dir", "rm -rf tests && ln -s {host} tests"),
    ("tests dir -> relative ../host", "rm -rf tests && ln -s {rel} tests"),
    ("nested dir -> host dir", "rm -rf tests/unit && ln -s {host} tests/unit"),
    ("nested dir -> host/unit", "rm -rf tests/unit && ln -s {host}/unit tests/unit"),
    ("file -> host file", "rm tests/test_hidden.py && ln -s {host}/test_hidden.py tests/test_hidden.py"),
    ("__pycache__ -> host cache", "mkdir -p tests && ln -s {host}/__pycache__ tests/__pycache__"),
    ("a background swap mid-check", "(sleep 0.3; rm -rf tests; ln -s {host} tests) & sleep 0.6"),
]


@pytest.mark.parametrize("script", [s for _, s in SWAPS], ids=[n for n, _ in SWAPS])
@pytest.mark.parametrize("agent_had_tests", [False, True], ids=["tests-created", "tests-overwritten"])
def test_a_check_that_swaps_in_links_cannot_touch_the_host(bwrap, worktree: Path, task_tests: Path, host: Path,
                                                           script: str, agent_had_tests: bool) -> None:
    if agent_had_tests:  # the agent's own tests/ at the same paths: restore must put its bytes back
        (worktree / "tests" / "unit").mkdir(parents=True)
        (worktree / "tests" / "test_hidden.py").write_text(AGENT)
        (worktree / "tests" / "unit" / "test_nested.py").write_text(AGENT)
    before = host_state(host)
    rel = Path("..") / host.name
    try:
        with task_tests_in(worktree, task_tests):
            assert (worktree / "tests" / "test_hidden.py").read_text() == HIDDEN
            check(bwrap, worktree, script.format(host=host, rel=rel))
    except UnsafePath as exc:  # refusing is fine; following is not
        assert "symbolic link" in exc.message
    assert host_state(host) == before
    tests = worktree / "tests"
    assert not tests.is_symlink() or Path(str(tests.readlink())).name == host.name  # a link is left, not followed
    if not tests.is_symlink():
        leftovers = {p.relative_to(tests).as_posix() for p in tests.rglob("*") if p.is_file()}
        assert not any((tests / p).read_text() == HIDDEN for p in leftovers)  # no hidden test stays behind
        if agent_had_tests and not (tests / "unit").is_symlink() and (tests / "test_hidden.py").exists():
            assert (tests / "test_hidden.py").read_text() == AGENT
            assert not (tests / "test_hidden.py").is_symlink()


def test_a_late_swap_after_the_check_has_nothing_left_to_run(bwrap, worktree: Path, task_tests: Path,
                                                           host: Path) -> None:
    before = host_state(host)
    with task_tests_in(worktree, task_tests):
        check(bwrap, worktree, f"nohup sh -c 'sleep 1; rm -rf tests; ln -s {host} tests' >/dev/null 2>&1 &")
    time.sleep(2)  # a process that outlived the sandbox would swap the link in now
    assert not (worktree / "tests").exists() and not (worktree / "tests").is_symlink()
    assert host_state(host) == before


def test_tests_dir_planted_as_a_link_by_the_agent_is_refused_before_the_check(worktree: Path, task_tests: Path,
                                                                             host: Path) -> None:
    (worktree / "tests").symlink_to(host)
    before = host_state(host)
    entered = False
    with pytest.raises(UnsafePath) as info:
        with task_tests_in(worktree, task_tests):
            entered = True
    assert not entered and f"{worktree / 'tests'} is a symbolic link" in info.value.message
    assert host_state(host) == before
    assert (worktree / "tests").readlink() == host  # the agent's link is left as it was


def test_nested_dir_planted_as_a_link_is_refused_and_the_partial_copy_undone(worktree: Path, task_tests: Path,
                                                                            host: Path) -> None:
    (worktree / "tests").mkdir()
    (worktree / "tests" / "unit").symlink_to(host / "unit")
    before = host_state(host)
    with pytest.raises(UnsafePath):
        with task_tests_in(worktree, task_tests):
            pass
    assert host_state(host) == before
    assert sorted(p.name for p in (worktree / "tests").iterdir()) == ["unit"]  # test_hidden.py taken out again


def test_a_test_file_planted_as_a_link_is_replaced_for_the_check_and_put_back(bwrap, worktree: Path,
                                                                              task_tests: Path, host: Path) -> None:
    (worktree / "tests").mkdir()
    planted = worktree / "tests" / "test_hidden.py"
    planted.symlink_to(host / "secret.txt")
    before = host_state(host)
    with task_tests_in(worktree, task_tests):
        assert not planted.is_symlink() and planted.read_text() == HIDDEN  # the check runs the real test
        assert host_state(host) == before  # written beside the link's target, not through it
        check(bwrap, worktree, "cat tests/test_hidden.py")
    assert planted.is_symlink() and planted.readlink() == host / "secret.txt"  # the agent's link, not the host bytes
    assert host_state(host) == before


def test_leftover_cleanup_before_an_act_does_not_delete_through_a_link(worktree: Path, task_tests: Path,
                                                                       host: Path) -> None:
    (host / "test_hidden.py").write_text(HIDDEN)  # same bytes as the hidden test, so the old code deleted it
    (worktree / "tests").symlink_to(host)
    remove_task_tests(worktree, task_tests)
    assert (host / "test_hidden.py").read_text() == HIDDEN
    # a real leftover (a crash mid-check) is still cleaned up
    (worktree / "tests").unlink()
    (worktree / "tests").mkdir()
    (worktree / "tests" / "test_hidden.py").write_text(HIDDEN)
    (worktree / "tests" / "mine.py").write_text(AGENT)
    remove_task_tests(worktree, task_tests)
    assert sorted(p.name for p in (worktree / "tests").iterdir()) == ["mine.py"]


def test_the_oracle_does_not_copy_its_solution_through_a_planted_link(bwrap, worktree: Path, tmp_path: Path,
                                                                      host: Path) -> None:
    solution = tmp_path / "solution"
    (solution / "unit").mkdir(parents=True)
    (solution / "unit" / "test_nested.py").write_text("solved\n")
    check(bwrap, worktree, f"ln -s {host}/unit unit")  # an earlier check plants the link
    before = host_state(host)
    with pytest.raises(UnsafePath):
        copy_over(solution, worktree)
    assert host_state(host) == before


@pytest.mark.parametrize("rel", ["../outside.txt", "tests/../../outside.txt", "./../outside.txt", "/tmp/x/abs.txt",
                                 "", "tests/a\0b"])
def test_paths_that_leave_the_root_are_refused_before_any_io(worktree: Path, rel: str) -> None:
    with pytest.raises(UnsafePath):
        safefs.write(worktree, rel, safefs.Node("file", b"pwned\n"))
    with pytest.raises(UnsafePath):
        safefs.remove(worktree, rel)
    assert not (worktree.parent / "outside.txt").exists()


def test_a_fifo_in_the_tests_is_refused_not_read(worktree: Path, task_tests: Path) -> None:
    import os

    os.mkfifo(task_tests / "pipe")
    with pytest.raises(UnsafePath) as info:
        with task_tests_in(worktree, task_tests):
            pass
    assert "pipe is not a file, directory or link" in info.value.message
    assert not (worktree / "tests").exists()


def test_the_loop_ends_the_attempt_when_its_check_swaps_tests_for_a_link(store, tmp_path: Path, host: Path) -> None:
    from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
    from loopmeter.tasks import load_task

    task_dir = tmp_path / "evil-task"
    (task_dir / "repo").mkdir(parents=True)
    (task_dir / "repo" / "README.md").write_text("hi\n")
    (task_dir / "tests").mkdir()
    (task_dir / "tests" / "test_hidden.py").write_text(HIDDEN)
    (task_dir / "task.toml").write_text(
        'id = "evil"\ninstruction = "x"\n'
        f'check = "rm -rf tests __pycache__; ln -s {host} tests; exit 1"\n')
    task = load_task(task_dir)
    before = host_state(host)
    result = start_run(RunRequest(instruction=task.instruction, check=task.check, repo=None, task=task,
                                  agents=[AgentSpec("nop")], sandbox="bwrap", budgets=Budgets(max_iters=2)),
                       store=store)
    attempt = result.attempts[0]
    assert attempt.status == "error" and "symbolic link" in (attempt.stop_reason or ""), attempt.stop_reason
    assert host_state(host) == before
    log = subprocess.run(["git", "-C", str(result.attempts[0].worktree or ""), "status", "--porcelain"],
                         capture_output=True, text=True)
    assert "test_hidden.py" not in log.stdout
