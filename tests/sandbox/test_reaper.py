"""`--sandbox none`: what an unsandboxed command starts does not outlive the process that ran it.

Real processes throughout: a parent Python process runs a command through the unsandboxed runner,
the command leaves a grandchild (detached with setsid, its own parent gone, so it hangs off the
process tree wherever it can), the test SIGKILLs the parent and watches /proc for the grandchild.
The control does the same with a plain `subprocess.Popen(start_new_session=True)`, which is what
the runner did before, and shows the grandchild surviving: so the check can fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopmeter.policies import load_policy
from loopmeter.sandbox import make_runner

CHECK = {"role": "check", "actor": "user"}
# the grandchild is orphaned at once (the subshell that started it exits) and leaves the session
ORPHAN = "echo $$ > command.pid; (setsid sleep 300 & echo $! > grandchild.pid); echo started; sleep 300"

PARENT_RUNNER = """
import sys, threading
from pathlib import Path
from loopmeter.policies import load_policy
from loopmeter.sandbox import make_runner

runner = make_runner("none")
def run():
    runner.run(["sh", "-c", sys.argv[2]], workdir=Path(sys.argv[1]), policy=load_policy("strict"),
               role="check", actor="user", timeout_s=600)
if sys.argv[3] == "thread":  # as an executor's worker thread runs it
    t = threading.Thread(target=run)
    t.start()
    t.join()
else:
    run()
"""

PARENT_PLAIN = """
import subprocess, sys
proc = subprocess.Popen(["sh", "-c", sys.argv[2]], cwd=sys.argv[1], start_new_session=True)
proc.wait()
"""


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat.rpartition(b")")[2].split()
    return None if fields[0] == b"Z" else int(fields[19])


def _alive(pid: int, started: int) -> bool:
    return _start_time(pid) == started  # the same process, not a later one given the same pid


def _wait_for_pid(path: Path, parent: subprocess.Popen, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit():
            return int(text)
        assert parent.poll() is None, f"the parent ended early: {parent.stderr.read() if parent.stderr else ''}"
        time.sleep(0.02)
    raise AssertionError("the command never started its grandchild")


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids to SIGKILL after the test, with their process groups (the control's command and
    grandchild survive by design)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for kill in (os.kill, os.killpg):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _kill_parent_and_watch(script: str, workdir: Path, mode: str, leftovers: list[int]) -> bool:
    """Start `script` as the parent, SIGKILL it once the grandchild runs; whether the grandchild
    is still alive 3 s later (polled every 20 ms, so a death is seen at once)."""
    parent = subprocess.Popen([sys.executable, "-c", script, str(workdir), ORPHAN, mode],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        pid = _wait_for_pid(workdir / "grandchild.pid", parent)
        leftovers += [pid, int((workdir / "command.pid").read_text())]
        started = _start_time(pid)
        assert started is not None
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if not _alive(pid, started):
                return False
            time.sleep(0.02)
        return True
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_control_a_plain_new_session_child_leaves_its_grandchild_running(tmp_path: Path,
                                                                         leftovers: list[int]) -> None:
    assert _kill_parent_and_watch(PARENT_PLAIN, tmp_path, "main", leftovers)


@pytest.mark.parametrize("mode", ["main", "thread"])
def test_a_sigkilled_parent_takes_the_unsandboxed_commands_grandchild_with_it(tmp_path: Path, mode: str,
                                                                               leftovers: list[int]) -> None:
    assert not _kill_parent_and_watch(PARENT_RUNNER, tmp_path, mode, leftovers)


def test_a_timeout_kills_a_grandchild_that_left_the_session(store, tmp_path: Path, leftovers: list[int]) -> None:
    runner = make_runner("none", store=store)
    res = runner.run(["sh", "-c", ORPHAN], workdir=tmp_path, policy=load_policy("strict"), timeout_s=1, **CHECK)
    pid = int((tmp_path / "grandchild.pid").read_text())
    leftovers.append(pid)
    assert res.exit_code == 124 and res.timed_out and res.stdout == "started\n"
    assert _start_time(pid) is None


def test_what_a_finished_command_left_running_is_killed(store, tmp_path: Path, leftovers: list[int]) -> None:
    runner = make_runner("none", store=store)
    res = runner.run(["sh", "-c", "(setsid sleep 300 & echo $! > grandchild.pid); exit 3"], workdir=tmp_path,
                     policy=load_policy("strict"), **CHECK)
    pid = int((tmp_path / "grandchild.pid").read_text())
    leftovers.append(pid)
    assert res.exit_code == 3 and res.wall_s < 5  # the output pipes it held were not waited on
    assert _start_time(pid) is None


def test_exit_codes_and_start_failures_are_the_commands(store, tmp_path: Path) -> None:
    runner = make_runner("none", store=store)
    policy = load_policy("strict")
    res = runner.run(["sh", "-c", "echo out; echo err >&2; exit 7"], workdir=tmp_path, policy=policy, **CHECK)
    assert (res.exit_code, res.stdout, res.stderr) == (7, "out\n", "err\n")
    res = runner.run(["sh", "-c", "kill -TERM $$"], workdir=tmp_path, policy=policy, **CHECK)
    assert res.exit_code == 128 + signal.SIGTERM
    res = runner.run(["cat"], workdir=tmp_path, policy=policy, stdin="fed\n", **CHECK)
    assert res.stdout == "fed\n"
    res = runner.run(["no-such-command-xyz"], workdir=tmp_path, policy=policy, **CHECK)
    assert res.exit_code == 125 and res.killed_reason == "start" and "no-such-command-xyz" in res.stderr
