"""Budgets kill the agent's process; policy `ask` pauses a run until approve/deny; apply makes one commit."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
from loopmeter.store import Attempt, Outcome, Run
from tests.agents.conftest import policy_with
from tests.conftest import loopmeter_cmd
from tests.servers.openai_server import OpenAIServer, text, tool_call


def _procs_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_wall_clock_budget_kills_the_agent_process(store, slow_task, sandbox) -> None:
    started = time.monotonic()
    result = start_run(RunRequest(
        instruction=slow_task.instruction, check=slow_task.check, repo=None, task=slow_task,
        agents=[AgentSpec("oracle")], sandbox=sandbox, budgets=Budgets(max_iters=3, max_minutes=2 / 60)),
        store=store)
    took = time.monotonic() - started
    attempt = result.attempts[0]
    assert attempt.status == "timeout" and "wall time" in attempt.stop_reason
    assert attempt.iterations == 1
    assert took < 30  # the 987.6 s sleep did not run out
    time.sleep(0.2)
    assert _procs_with("sleep 987.6") == []
    assert result.status == "failed"


def test_agent_ask_waits_then_approve_continues_it(store, fix_add_task, sandbox, tmp_path) -> None:
    policy = policy_with(tmp_path, '  - id: ask-oracle\n    action: agent\n    match: "oracle"\n'
                                   '    decision: ask\n    reason: oracle needs a yes\n')
    result = start_run(RunRequest(
        instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
        agents=[AgentSpec("oracle"), AgentSpec("nop")], sandbox=sandbox, policy=policy,
        budgets=Budgets(max_iters=1)), store=store)
    assert result.status == "waiting"
    assert [(q["agent"], q["action"], q["rule_id"]) for q in result.approvals] == [
        ("oracle", "agent", "rules.ask-oracle")]
    assert store.get(Run, result.run_id).status == "waiting"
    oracle_id = next(a.id for a in result.attempts if a.agent == "oracle")
    assert store.get(Attempt, oracle_id).iterations == 0  # nothing ran before the answer

    out = subprocess.run(loopmeter_cmd("approve", result.run_id, "--json"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert obj["status"] == "passed" and obj["winner"] == oracle_id
    again = subprocess.run(loopmeter_cmd("approve", result.run_id), capture_output=True, text=True)
    assert again.returncode == 2 and "not waiting" in again.stderr
    from sqlmodel import select

    from loopmeter.store import Audit

    with store.session() as s:
        trail = [(a.action, a.decision, a.actor) for a in s.exec(
            select(Audit).where(Audit.attempt_id == oracle_id, Audit.layer == "policy").order_by(Audit.seq))]
    assert trail[:2] == [("agent", "ask", "agent:oracle"), ("approve", "allow", trail[1][2])]
    assert trail[1][2].startswith("user:")


def test_deny_stops_the_attempt(store, fix_add_task, sandbox, tmp_path) -> None:
    policy = policy_with(tmp_path, '  - id: ask-oracle\n    action: agent\n    match: "oracle"\n'
                                   '    decision: ask\n')
    result = start_run(RunRequest(
        instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
        agents=[AgentSpec("oracle")], sandbox=sandbox, policy=policy), store=store)
    assert result.status == "waiting"
    out = subprocess.run(loopmeter_cmd("deny", result.run_id), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    attempt = store.get(Attempt, result.attempts[0].id)
    assert attempt.status == "cancelled" and "denied" in attempt.stop_reason
    assert store.get(Run, result.run_id).status == "failed"


def _builtin_asks_for_sudo(server, store, task, sandbox, budgets=None):
    """A builtin run whose first tool call, `sudo echo hi`, needs a person's approval."""
    server.script(
        tool_call("run_command", {"command": "sudo echo hi"}, prompt_tokens=50, completion_tokens=5),
        tool_call("edit_file", {"path": "calc.py", "search": "a - b", "replace": "a + b"}),
        text("done"),
    )
    return start_run(RunRequest(
        instruction=task.instruction, check=task.check, repo=None, task=task,
        agents=[AgentSpec("builtin", "openai/m")], sandbox=sandbox, api_base=server.base_url,
        **({"budgets": budgets} if budgets else {})), store=store)


def test_builtin_command_ask_interrupts_and_resumes_without_calling_the_model_again(
        store, fix_add_task, sandbox) -> None:
    with OpenAIServer() as server:
        result = _builtin_asks_for_sudo(server, store, fix_add_task, sandbox)
        assert result.status == "waiting"
        assert result.approvals[0]["action"] == "exec" and result.approvals[0]["target"] == "sudo echo hi"
        assert len(server.requests) == 1
        from loopmeter.agents.loop import answer_approvals

        done = answer_approvals(result.run_id, False, store=store)
        assert done.status == "passed"
        assert len(server.requests) == 3  # the first, paid-for call was replayed from the journal
        tool_reply = server.requests[1]["body"]["messages"][-1]["content"]
    assert "did not approve" in tool_reply
    from sqlmodel import func, select

    from loopmeter.store import Usage

    with store.session() as s:
        assert s.exec(select(func.count()).select_from(Usage).where(Usage.run_id == result.run_id)).one() == 3


def test_a_call_replayed_after_an_approval_counts_once_against_the_token_budget(
        store, fix_add_task, sandbox) -> None:
    # 55 tokens are spent before the question; the step re-run after the answer gets the 45
    # left and replays that call from its journal: counted again, it would spend the 45 at once.
    with OpenAIServer() as server:
        result = _builtin_asks_for_sudo(server, store, fix_add_task, sandbox,
                                        Budgets(max_iters=2, max_usd=None, max_tokens=100))
        assert result.status == "waiting" and len(server.requests) == 1
        from loopmeter.agents.loop import answer_approvals

        done = answer_approvals(result.run_id, False, store=store)
        assert len(server.requests) == 3
    attempt = done.attempts[0]
    assert (done.status, attempt.status, attempt.stop_reason) == ("passed", "passed", "check passed")
    assert attempt.input_tokens + attempt.output_tokens == 85  # each call once


def test_builtin_command_a_person_approved_runs_in_the_sandbox(store, fix_add_task, sandbox) -> None:
    """The runner checks every command again; an `ask` a person answered yes lets exactly that one run."""
    with OpenAIServer() as server:
        result = _builtin_asks_for_sudo(server, store, fix_add_task, sandbox)
        assert result.status == "waiting"
        from loopmeter.agents.loop import answer_approvals

        done = answer_approvals(result.run_id, True, store=store)
        assert done.status == "passed"
        tool_reply = server.requests[1]["body"]["messages"][-1]["content"]
    assert tool_reply.startswith("exit code") and "needs approval" not in tool_reply, tool_reply
    from sqlmodel import select

    from loopmeter.store import Audit

    with store.session() as s:
        rows = list(s.exec(select(Audit).where(Audit.run_id == result.run_id, Audit.action == "exec",
                                               Audit.target.contains("sudo echo hi"))))  # type: ignore[attr-defined]
    assert any(r.decision == "allow" and "approved" in (r.detail or "") for r in rows)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_apply_merges_the_winner_as_one_commit_with_the_trailer(store, fix_add_task, sandbox, tmp_path) -> None:
    repo = tmp_path / "user-repo"
    repo.mkdir()
    (repo / "calc.py").write_text((fix_add_task.path / "repo" / "calc.py").read_text())
    (repo / "README").write_text("mine\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "add", "-A")
    _git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "start")
    before = _git(repo, "rev-parse", "HEAD").strip()
    result = start_run(RunRequest(
        instruction="Fix add", check=fix_add_task.check, repo=repo, task=fix_add_task,
        agents=[AgentSpec("nop"), AgentSpec("oracle")], sandbox=sandbox, budgets=Budgets(max_iters=1)),
        store=store)
    assert result.status == "passed"
    assert _git(repo, "rev-parse", "HEAD").strip() == before  # nothing reaches the user's branch before apply

    out = subprocess.run(loopmeter_cmd("apply", result.run_id), cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    log = _git(repo, "log", "--format=%H%n%B%n--", f"{before}..HEAD")
    assert log.count("\n--") == 1  # exactly one commit
    sha = log.split("\n", 1)[0]
    assert f"Loopmeter-Run: {result.run_id}" in log
    trailers = _git(repo, "log", "-1", "--format=%(trailers:key=Loopmeter-Run,valueonly)").strip()
    assert trailers == result.run_id
    assert "a + b" in (repo / "calc.py").read_text()
    assert not (repo / "tests").exists()
    winner = store.get(Attempt, result.winner)
    assert winner.applied_at is not None
    outcome = store.get(Outcome, sha)
    assert outcome.run_id == result.run_id and outcome.attempt_id == result.winner and outcome.branch == "main"
    twice = subprocess.run(loopmeter_cmd("apply", result.run_id), cwd=repo, capture_output=True, text=True)
    assert twice.returncode == 2 and "already applied" in twice.stderr


def test_ctrl_c_kills_the_agent_and_marks_the_run_cancelled(store, slow_task, sandbox) -> None:
    import signal

    proc = subprocess.Popen(loopmeter_cmd("run", "--task", str(slow_task.path), "--agent", "oracle",
                                          "--sandbox", sandbox), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _procs_with("sleep 987.6") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not _procs_with("sleep 987.6"):
            proc.kill()
            raise AssertionError(f"the agent never started: {proc.communicate(timeout=10)[1].decode()[-2000:]}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)
    assert _procs_with("sleep 987.6") == []
    from sqlmodel import select

    with store.session() as s:
        run = s.exec(select(Run)).one()
        attempt = s.exec(select(Attempt)).one()
    assert run.status == "cancelled"
    assert attempt.status == "cancelled" and "resume" in attempt.stop_reason


class _Spender:
    """A backend that reports a pricey model call while its process is still running (like a CLI agent)."""

    name = "spender"
    description = "test backend"

    def available(self):
        return True, None

    def step(self, ctx):
        import threading

        from loopmeter.agents.base import StepResult
        from loopmeter.records import UsageRow, utcnow

        def report() -> None:
            time.sleep(1.0)
            ctx.on_usage(UsageRow(key=f"loop:{ctx.attempt_id}:{ctx.iteration}:1", source="loop", ts=utcnow(),
                                  model="m", input_tokens=10, output_tokens=1, cost_usd=3.0,
                                  cost_source="reported"))

        threading.Thread(target=report, daemon=True).start()
        res = ctx.sandbox.run(["bash", "-c", "sleep 987.6"], workdir=ctx.workdir, policy=ctx.policy, role="agent",
                              actor=ctx.actor, timeout_s=ctx.timeout_s, cancel=ctx.cancel, run_id=ctx.run_id,
                              attempt_id=ctx.attempt_id)
        return StepResult(exit_code=res.exit_code, summary=f"killed={res.killed_reason}")


def test_usd_budget_spent_mid_step_kills_the_agent_process(store, fix_add_task, sandbox) -> None:
    from loopmeter.agents.base import register

    register("spender", _Spender)
    started = time.monotonic()
    result = start_run(RunRequest(
        instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
        agents=[AgentSpec("spender")], sandbox=sandbox, budgets=Budgets(max_iters=3, max_usd=1.0)), store=store)
    assert time.monotonic() - started < 30
    attempt = result.attempts[0]
    assert attempt.status == "budget" and attempt.stop_reason.startswith("budget: usd 3.0000 >= 1.0000")
    assert attempt.iterations == 1 and attempt.cost_usd == 3.0
    time.sleep(0.2)
    assert _procs_with("sleep 987.6") == []


def test_on_a_terminal_run_asks_and_continues_in_place(store, fix_add_task, sandbox, tmp_path) -> None:
    import os
    import pty
    import select as select_mod

    policy = policy_with(tmp_path, '  - id: ask-oracle\n    action: agent\n    match: "oracle"\n'
                                   '    decision: ask\n')
    master, slave = pty.openpty()
    proc = subprocess.Popen(loopmeter_cmd("run", "--task", str(fix_add_task.path), "--agent", "oracle",
                                          "--policy", str(policy), "--sandbox", sandbox),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select_mod.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                if not answered and b"allow?" in seen:
                    os.write(master, b"y\n")
                    answered = True
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, seen.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert answered and b"wants to agent: oracle" in seen
    from sqlmodel import select

    with store.session() as s:
        assert s.exec(select(Run)).one().status == "passed"


def test_time_spent_waiting_for_an_approval_does_not_count_against_the_run_budget(
        store, fix_add_task, sandbox, tmp_path) -> None:
    # The run's wall-time budget counts the time the run is driven: 3 s here. It waits for a
    # yes for longer than that; once approved it still has its time, so the agent (nop,
    # which never passes) gets both its iterations instead of a wall-time stop after one.
    policy = policy_with(tmp_path, '  - id: ask-nop\n    action: agent\n    match: "nop"\n'
                                   '    decision: ask\n')
    result = start_run(RunRequest(
        instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
        agents=[AgentSpec("nop")], sandbox=sandbox, policy=policy, budgets=Budgets(max_iters=2),
        run_budgets=Budgets(max_iters=None, max_usd=None, max_tokens=None, max_minutes=0.05)), store=store)
    assert result.status == "waiting"
    driven = store.get(Run, result.run_id).active_s
    assert driven is not None and 0 < driven < 3
    time.sleep(3.5)  # longer than the whole run budget

    for _ in range(2):  # the policy asks before each of nop's two steps
        out = subprocess.run(loopmeter_cmd("approve", result.run_id, "--json"), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 1, out.stderr  # waiting again, then failed: nop never passes
    attempt = store.get(Attempt, result.attempts[0].id)
    assert attempt.iterations == 2 and attempt.stop_reason.startswith("budget: iterations"), attempt.stop_reason
    run = store.get(Run, result.run_id)
    assert run.status == "failed" and driven < run.active_s < 3  # the drives, not the waits between them
