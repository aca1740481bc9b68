"""The loop end to end with the oracle and nop backends: winner, iteration table, tests kept away from the agent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
from loopmeter.store import Attempt, Iteration, Run, Span
from tests.conftest import loopmeter_cmd


def _req(task, agents, sandbox, **kw):
    return RunRequest(instruction=task.instruction, check=task.check, repo=None, task=task, agents=agents,
                      sandbox=sandbox, **kw)


def test_oracle_passes_nop_fails_and_oracle_wins(store, fix_add_task, sandbox) -> None:
    result = start_run(_req(fix_add_task, [AgentSpec("nop"), AgentSpec("oracle")], sandbox,
                            budgets=Budgets(max_iters=2)), store=store)
    by_agent = {a.agent: a for a in result.attempts}
    assert result.status == "passed"
    assert result.winner == by_agent["oracle"].id
    assert by_agent["oracle"].status == "passed" and by_agent["oracle"].iterations == 1
    assert by_agent["oracle"].time_to_green_s is not None and by_agent["oracle"].iterations_to_green == 1
    assert by_agent["nop"].status == "failed" and by_agent["nop"].iterations == 2
    assert by_agent["nop"].stop_reason.startswith("budget: iterations")
    run = store.get(Run, result.run_id)
    assert run.status == "passed" and run.winner_attempt_id == by_agent["oracle"].id
    assert run.policy == "default" and len(run.policy_sha256) == 64
    assert json.loads(run.config)["human_hours"] == 0.5  # the task's estimate, for ROI's hourly value model

    with store.session() as s:
        from sqlmodel import select

        iters = list(s.exec(select(Iteration).where(Iteration.attempt_id == by_agent["nop"].id)))
        spans = [sp.name for sp in s.exec(select(Span).where(Span.run_id == result.run_id))]
    assert [i.check_passed for i in sorted(iters, key=lambda i: i.n)] == [False, False]
    assert "returned -1" in iters[0].check_output_tail
    assert spans.count("invoke_agent nop") == 2 and spans.count("invoke_agent oracle") == 1
    assert "sandbox.exec" in spans

    from loopmeter.store import Audit

    with store.session() as s:
        audited = list(s.exec(select(Audit).where(Audit.run_id == result.run_id)))
    assert audited and {a.attempt_id for a in audited} <= {by_agent["oracle"].id, by_agent["nop"].id}
    assert any(a.actor == "check" for a in audited)

    # the winner's branch holds the fix as a commit; the task's tests never stay in the worktree
    oracle = store.get(Attempt, by_agent["oracle"].id)
    worktree = Path(oracle.worktree)
    assert "a + b" in (worktree / "calc.py").read_text()
    assert not (worktree / "tests").exists()
    log = subprocess.run(["git", "-C", str(worktree), "log", "--format=%H %D", "-1"], capture_output=True,
                         text=True, check=True).stdout
    assert oracle.head_commit in log and oracle.branch in log
    assert json.loads(oracle.diffstat) == {"files": 1, "insertions": 1, "deletions": 1}


def test_shadow_attempt_is_recorded_but_never_wins(store, fix_add_task, sandbox) -> None:
    result = start_run(_req(fix_add_task, [AgentSpec("nop"), AgentSpec("oracle", role="shadow")], sandbox,
                            budgets=Budgets(max_iters=1)), store=store)
    roles = {a.agent: (a.role, a.status) for a in result.attempts}
    assert roles == {"nop": ("primary", "failed"), "oracle": ("shadow", "passed")}
    assert result.winner is None and result.status == "failed"
    assert store.get(Run, result.run_id).kind == "loop"


def test_cli_run_json_prints_the_run_object_and_exit_codes(tmp_path, fix_add_task, sandbox) -> None:
    out = subprocess.run(loopmeter_cmd("run", "--task", str(fix_add_task.path), "--agent", "oracle", "--agent",
                                       "nop", "--max-iters", "1", "--sandbox", sandbox, "--json"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert set(obj) == {"id", "status", "task", "policy_sha256", "attempts", "winner"}
    assert set(obj["attempts"][0]) == {"id", "agent", "model", "status", "stop_reason", "iterations",
                                       "input_tokens", "output_tokens", "cache_read_tokens",
                                       "cache_write_tokens", "cost_usd", "wall_s", "time_to_green_s", "branch"}
    assert obj["winner"] == obj["attempts"][0]["id"]

    failed = subprocess.run(loopmeter_cmd("run", "--task", str(fix_add_task.path), "--agent", "nop",
                                          "--max-iters", "1", "--sandbox", sandbox, "--json"),
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and json.loads(failed.stdout)["winner"] is None

    shown = subprocess.run(loopmeter_cmd("runs", "show", obj["id"], "--json"), capture_output=True, text=True)
    detail = json.loads(shown.stdout)
    assert detail["attempts"][1]["iteration_table"][0]["check_passed"] is False
    listed = json.loads(subprocess.run(loopmeter_cmd("runs", "list", "--json"), capture_output=True,
                                       text=True).stdout)
    assert {r["id"] for r in listed} >= {obj["id"]}


def test_bad_input_exits_2_with_a_hint(tmp_path, monkeypatch) -> None:
    unknown = subprocess.run(loopmeter_cmd("run", "x", "--check", "true", "--agent", "nope"), cwd=tmp_path,
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown agent" in unknown.stderr and "hint:" in unknown.stderr
    not_git = subprocess.run(loopmeter_cmd("run", "x", "--check", "true", "--agent", "nop", "--sandbox", "none"),
                             cwd=tmp_path, capture_output=True, text=True)
    assert not_git.returncode == 2 and "not a git repository" in not_git.stderr
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    no_key = subprocess.run(loopmeter_cmd("run", "x", "--check", "true", "--agent", "builtin:openai/gpt-4o"),
                            cwd=tmp_path, capture_output=True, text=True, env=env)
    assert no_key.returncode == 2 and "OPENAI_API_KEY" in no_key.stderr


def test_run_wall_clock_budget_stops_every_attempt(store, slow_task, sandbox) -> None:
    result = start_run(_req(slow_task, [AgentSpec("oracle"), AgentSpec("oracle")], sandbox,
                            budgets=Budgets(max_iters=3, max_minutes=10),
                            run_budgets=Budgets(max_iters=None, max_usd=None, max_minutes=2 / 60)), store=store)
    assert [a.status for a in result.attempts] == ["timeout", "timeout"]
    assert all(a.stop_reason.endswith("(run)") for a in result.attempts)
    assert result.attempts[0].branch != result.attempts[1].branch  # the same agent twice: -2 suffix
    assert result.attempts[1].branch.endswith("/oracle-2")


def test_the_loop_records_to_postgresql(pg_store, fix_add_task, sandbox) -> None:
    result = start_run(_req(fix_add_task, [AgentSpec("oracle"), AgentSpec("nop")], sandbox,
                            budgets=Budgets(max_iters=1)), store=pg_store)
    assert result.status == "passed" and result.winner == result.attempts[0].id
    from loopmeter.agents.runs import run_object

    obj = run_object(pg_store, result.run_id[:10], detail=True)
    assert obj["attempts"][1]["iteration_table"][0]["check_passed"] is False
    assert obj["attempts"][0]["cost_usd"] == 0.0


def test_an_attempt_whose_worktree_cannot_be_made_ends_in_error_not_a_crash(store, fix_add_task, sandbox) -> None:
    from loopmeter.config import load_settings

    blocker = load_settings().worktrees_dir / "RUNWITHABLOCKEDDIR"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the run's worktree directory should go")
    result = start_run(_req(fix_add_task, [AgentSpec("oracle")], sandbox, run_id="RUNWITHABLOCKEDDIR"),
                       store=store)
    assert result.status == "failed" and result.winner is None
    attempt = result.attempts[0]
    assert attempt.status == "error" and attempt.stop_reason.startswith("error:")
