"""Loop runs write their sessions: the attempt's branch, worktree and the run's repository."""

from __future__ import annotations

import json
import os

from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
from loopmeter.store import Attempt, Run
from tests.servers.openai_server import OpenAIServer, text, tool_call


def test_a_loop_attempts_usage_has_one_session_row_at_the_runs_repo_and_branch(store, fix_add_task, sandbox):
    with OpenAIServer() as server:
        server.script(
            tool_call("edit_file", {"path": "calc.py", "search": "a - b", "replace": "a + b"},
                      prompt_tokens=230, completion_tokens=30),
            text("Fixed add().", prompt_tokens=300, completion_tokens=6),
        )
        result = start_run(RunRequest(
            instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
            agents=[AgentSpec("builtin", "openai/scripted-model")], sandbox=sandbox, api_base=server.base_url,
            budgets=Budgets(max_iters=1)), store=store)
    attempt = store.get(Attempt, result.attempts[0].id)
    repo = json.loads(store.get(Run, result.run_id).config)["repo"]
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT source, session_id, agent, cwd, branch, \"commit\", repo, first_ts, last_ts FROM session"
        ).all()
        times = conn.exec_driver_sql("SELECT min(ts), max(ts) FROM usage WHERE attempt_id = ?",
                                     (attempt.id,)).one()
    assert len(rows) == 1
    source, session_id, agent, cwd, branch, commit, identity, first, last = rows[0]
    assert (source, session_id, agent) == ("loop", attempt.id, "builtin")
    assert (cwd, branch, commit) == (attempt.worktree, attempt.branch, attempt.base_commit)
    assert identity == os.path.realpath(repo)  # a task repository has no remote: its top level
    assert (first, last) == tuple(times)
