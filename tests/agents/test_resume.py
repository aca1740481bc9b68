"""`kill -9` of `loopmeter run` mid-attempt, then `loopmeter resume`: finished steps are not repeated or re-billed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from sqlmodel import select

from loopmeter.store import Iteration, Run, Usage
from tests.conftest import loopmeter_cmd
from tests.servers.openai_server import OpenAIServer, text, tool_call


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_kill_9_mid_attempt_then_resume_finishes_without_duplicate_usage(store, fix_add_task, sandbox) -> None:
    with OpenAIServer() as server:
        server.script(
            text("Looks right to me.", prompt_tokens=111, completion_tokens=3),     # iteration 1: check fails
            text("(never answered: the run is killed meanwhile)", delay_s=8),       # iteration 2, call 1
        )
        proc = subprocess.Popen(loopmeter_cmd(
            "run", "--task", str(fix_add_task.path), "--agent", "builtin:openai/m", "--api-base", server.base_url,
            "--sandbox", sandbox, "--max-iters", "4", "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda: len(server.requests) >= 2 or proc.poll() is not None)
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        with store.session() as s:
            run = s.exec(select(Run)).one()
            before = list(s.exec(select(Usage).where(Usage.run_id == run.id)))
        assert run.status == "running"  # nobody got to record an ending
        assert [u.key.rsplit(":", 2)[1:] for u in before] == [["1", "1"]]

        server.script(
            tool_call("edit_file", {"path": "calc.py", "search": "a - b", "replace": "a + b"},
                      prompt_tokens=222, completion_tokens=7),
            text("Fixed.", prompt_tokens=333, completion_tokens=2),
        )
        out = subprocess.run(loopmeter_cmd("resume", run.id, "--json"), capture_output=True, text=True,
                             timeout=120)
        requests = len(server.requests)
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert obj["status"] == "passed" and obj["attempts"][0]["iterations"] == 2
    assert requests == 4  # iteration 1 was not asked again; only the killed call was redone
    with store.session() as s:
        rows = list(s.exec(select(Usage).where(Usage.run_id == run.id).order_by(Usage.id)))
        iters = list(s.exec(select(Iteration).where(Iteration.attempt_id == obj["attempts"][0]["id"])))
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys)) == 3
    assert [r.input_tokens for r in rows] == [111, 222, 333]
    assert obj["attempts"][0]["input_tokens"] == 666 and obj["attempts"][0]["output_tokens"] == 12
    assert sorted((i.n, i.check_passed) for i in iters) == [(1, False), (2, True)]


def test_resume_of_a_finished_run_changes_nothing(store, fix_add_task, sandbox) -> None:
    from loopmeter.agents.loop import AgentSpec, RunRequest, resume_run, start_run

    first = start_run(RunRequest(instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None,
                                 task=fix_add_task, agents=[AgentSpec("oracle")], sandbox=sandbox), store=store)
    again = resume_run(first.run_id, store=store)
    assert again.status == first.status == "passed" and again.winner == first.winner
    assert again.attempts[0].iterations == 1
    with store.session() as s:
        assert len(list(s.exec(select(Iteration).where(Iteration.attempt_id == first.winner)))) == 1
