"""The builtin agent through litellm over real HTTP against the scripted OpenAI server."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
from loopmeter.agents.tools import Toolbox
from loopmeter.store import Usage
from loopmeter.vocab import StepErrorKind, StopKind
from tests.servers.openai_server import OpenAIServer, text, tool_call


def _usage_rows(store, run_id):
    from sqlmodel import select

    with store.session() as s:
        return list(s.exec(select(Usage).where(Usage.run_id == run_id).order_by(Usage.id)))


def test_builtin_fixes_the_file_and_stores_the_tokens_the_server_reported(store, fix_add_task, sandbox) -> None:
    with OpenAIServer() as server:
        server.script(
            tool_call("list_files", {}, prompt_tokens=120, completion_tokens=9, cached_tokens=100),
            tool_call("read_file", {"path": "calc.py"}, prompt_tokens=180, completion_tokens=11),
            tool_call("edit_file", {"path": "calc.py", "search": "a - b", "replace": "a + b"},
                      prompt_tokens=230, completion_tokens=30, cached_tokens=150, reasoning_tokens=12),
            tool_call("run_command", {"command": "python3 -c 'import calc; print(calc.add(2, 3))'"},
                      prompt_tokens=260, completion_tokens=25),
            text("Fixed add().", prompt_tokens=300, completion_tokens=6),
        )
        result = start_run(RunRequest(
            instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
            agents=[AgentSpec("builtin", "openai/scripted-model")], sandbox=sandbox, api_base=server.base_url,
            budgets=Budgets(max_iters=2)), store=store)
        served = server.served()
        command_result = server.requests[4]["body"]["messages"][-1]["content"]
    attempt = result.attempts[0]
    assert result.status == "passed" and attempt.status == "passed" and attempt.iterations == 1
    assert command_result.startswith("exit code 0") and "5" in command_result  # ran in the sandbox
    rows = _usage_rows(store, result.run_id)
    assert len(rows) == len(served) == 5
    for row, reported in zip(rows, served, strict=True):
        cached = reported.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        assert row.input_tokens + row.cache_read_tokens == reported["prompt_tokens"]
        assert row.cache_read_tokens == cached
        assert row.output_tokens == reported["completion_tokens"]
        assert row.reasoning_tokens == reported.get("completion_tokens_details", {}).get("reasoning_tokens")
        assert row.attempt_id == attempt.id and row.source == "loop" and row.latency_ms is not None
        assert row.cost_usd is None and row.cost_source == "unpriced"  # a made-up model has no price
    assert attempt.input_tokens == sum(r["prompt_tokens"] for r in served) - 250
    assert attempt.cache_read_tokens == 250
    assert attempt.output_tokens == sum(r["completion_tokens"] for r in served)
    assert attempt.cost_usd is None and attempt.unpriced_calls == 5
    assert [r.key for r in rows] == [f"loop:{attempt.id}:1:{n}" for n in range(1, 6)]

    from sqlmodel import select

    from loopmeter.store import Span

    with store.session() as s:
        spans = list(s.exec(select(Span).where(Span.trace_id.in_(  # type: ignore[attr-defined]
            select(Span.trace_id).where(Span.name == "invoke_agent builtin")))))
    by_id = {sp.span_id: sp for sp in spans}
    agent_span = next(sp for sp in spans if sp.name == "invoke_agent builtin")
    children = sorted(sp.name for sp in spans if sp.parent_span_id == agent_span.span_id)
    assert children == ["chat openai/scripted-model"] * 5 + [
        "execute_tool edit_file", "execute_tool list_files", "execute_tool read_file", "execute_tool run_command"]
    sandboxed = [sp for sp in spans if sp.name == "sandbox.exec"]
    assert len(sandboxed) == 1 and by_id[sandboxed[0].parent_span_id].name == "execute_tool run_command"


def test_builtin_gets_check_failure_fed_back_on_the_next_iteration(store, fix_add_task, sandbox) -> None:
    with OpenAIServer() as server:
        server.script(
            text("I think it is fine."),  # iteration 1: does nothing, the check fails
            tool_call("write_file", {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"}),
            text("rewrote it"),
        )
        result = start_run(RunRequest(
            instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
            agents=[AgentSpec("builtin", "openai/m")], sandbox=sandbox, api_base=server.base_url,
            budgets=Budgets(max_iters=3)), store=store)
        second_prompt = server.requests[1]["body"]["messages"][1]["content"]
    assert result.status == "passed" and result.attempts[0].iterations == 2
    assert "returned -1" in second_prompt  # the failing check's output tail


def test_the_live_cost_of_an_unpriced_model_is_unpriced_and_of_a_priced_one_its_dollars(
        store, fix_add_task, sandbox) -> None:
    events: list[dict] = []
    with OpenAIServer() as server:
        for model in ("made-up-model", "gpt-4o-mini"):
            server.script(tool_call("list_files", {}, prompt_tokens=1000, completion_tokens=20),
                          text("done", prompt_tokens=1200, completion_tokens=5), model=model)
        start_run(RunRequest(
            instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
            agents=[AgentSpec("builtin", "openai/made-up-model"), AgentSpec("builtin", "openai/gpt-4o-mini")],
            sandbox=sandbox, api_base=server.base_url, budgets=Budgets(max_iters=1), on_event=events.append),
            store=store)
    live = {}  # the running cost each model call showed, per model
    models = {e["attempt_id"]: e["model"] for e in events if e.get("model")}
    for e in events:
        if e["state"] == "act" and "cost_usd" in e:
            live.setdefault(models.get(e["attempt_id"]), []).append(e["cost_usd"])
    unpriced, priced = live["openai/made-up-model"], live["openai/gpt-4o-mini"]
    assert unpriced == [None, None]  # never $0
    assert len(priced) == 2 and 0 < priced[0] < priced[1]


def test_file_tools_refuse_paths_outside_the_worktree(tmp_path: Path) -> None:
    work = tmp_path / "wt"
    work.mkdir()
    (tmp_path / "secret.txt").write_text("s3cret")
    (work / "link").symlink_to(tmp_path / "secret.txt")
    tools = Toolbox(work, run_command=lambda c: "unused")
    assert tools.call("read_file", {"path": "../secret.txt"}).startswith("error: refused")
    assert tools.call("read_file", {"path": "/etc/hostname"}).startswith("error: refused")
    assert tools.call("read_file", {"path": "link"}).startswith("error: refused")
    assert tools.call("write_file", {"path": "../x.txt", "content": "x"}).startswith("error: refused")
    assert not (tmp_path / "x.txt").exists()
    assert tools.call("write_file", {"path": "sub/ok.txt", "content": "hi"}) .startswith("wrote")
    assert tools.call("edit_file", {"path": "sub/ok.txt", "search": "hi", "replace": "ho"}) == "edited sub/ok.txt"
    assert tools.call("grep", {"pattern": "ho"}) == "sub/ok.txt:1: ho"
    assert tools.call("list_files", {}) == "link\nsub/ok.txt"


def test_policy_read_rules_apply_to_the_file_tools(tmp_path: Path) -> None:
    from loopmeter.agents.base import StepContext
    from loopmeter.agents.builtin import _Session
    from loopmeter.policies import load_policy
    from tests.agents.conftest import policy_with

    work = tmp_path / "wt"
    work.mkdir()
    (work / "prod.env").write_text("TOKEN=1")
    (work / "a.py").write_text("x = 1")
    policy = load_policy(policy_with(tmp_path, '  - id: no-env\n    action: read\n    match: "*.env"\n'
                                               '    decision: deny\n'))
    session = _Session(StepContext(run_id="r", attempt_id="a", agent="builtin", model="openai/m", workdir=work,
                                   instruction="", iteration=1, policy=policy, actor="agent:builtin"))
    assert session.toolbox.call("read_file", {"path": "prod.env"}).startswith("error: refused by policy")
    assert session.toolbox.call("read_file", {"path": "a.py"}) == "x = 1"


@pytest.mark.parametrize("model", ["openai/gpt-4o"])
def test_usd_budget_stops_a_priced_model(store, fix_add_task, sandbox, model) -> None:
    from loopmeter.telemetry.pricing import default_price_table

    one_call = default_price_table().cost(model, input_tokens=100_000, output_tokens=1_000)
    assert one_call is not None and one_call > 0.01
    with OpenAIServer(default=tool_call("list_files", {}, prompt_tokens=100_000, completion_tokens=1_000)) as server:
        result = start_run(RunRequest(
            instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
            agents=[AgentSpec("builtin", model)], sandbox=sandbox, api_base=server.base_url,
            budgets=Budgets(max_iters=5, max_usd=one_call * 2.5)), store=store)
        calls = len(server.requests)
    attempt = result.attempts[0]
    assert attempt.status == "budget" and attempt.stop_reason.startswith("budget: usd")
    assert calls == 3  # stopped as soon as the spend passed the budget, not at the turn limit
    assert attempt.cost_usd == pytest.approx(one_call * 3)
    assert result.status == "failed"


def test_builtin_over_the_anthropic_api_splits_cache_reads_and_writes(store, fix_add_task, sandbox) -> None:
    from tests.servers.anthropic_server import AnthropicServer, text_turn, tool_turn

    model = "anthropic/claude-sonnet-4-5-20250929"
    turns = [tool_turn("edit_file", {"path": "calc.py", "search": "a - b", "replace": "a + b"}, input_tokens=50,
                       cache_read_input_tokens=1000, cache_creation_input_tokens=200, output_tokens=30),
             text_turn("done", input_tokens=60, output_tokens=4)]
    with AnthropicServer(turns) as server:
        result = start_run(RunRequest(
            instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
            agents=[AgentSpec("builtin", model)], sandbox=sandbox, api_base=server.url), store=store)
    assert result.status == "passed"
    rows = _usage_rows(store, result.run_id)
    assert [(r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens) for r in rows] == [
        (50, 1000, 200, 30), (60, 0, 0, 4)]
    from loopmeter.telemetry.pricing import default_price_table

    expected = default_price_table().cost(model, input_tokens=50, cache_read_tokens=1000, cache_write_tokens=200,
                                          output_tokens=30)
    assert rows[0].cost_usd == pytest.approx(expected) and rows[0].cost_source == "calculated"
    assert result.attempts[0].cost_usd == pytest.approx(sum(r.cost_usd for r in rows))


@pytest.mark.parametrize(("limit", "kind"), [
    ("max_usd", StopKind.USD), ("max_tokens", StopKind.TOKENS), ("timeout_s", StopKind.WALL_TIME)])
def test_builtin_stops_at_its_share_of_a_budget_with_the_kind_of_limit(tmp_path: Path, limit, kind) -> None:
    # A step called without the loop's live check (no on_usage): the builtin agent's own check
    # stops it between model calls and says which budget in the step's stop kind, from which
    # the attempt's stop is taken (not from the words of its reason).
    from loopmeter.agents.base import StepContext
    from loopmeter.agents.budget import backend_stop
    from loopmeter.agents.builtin import BuiltinBackend
    from loopmeter.telemetry.pricing import default_price_table

    model = "openai/gpt-4o"
    one_call = default_price_table().cost(model, input_tokens=100_000, output_tokens=1_000)
    assert one_call is not None
    share = {"max_usd": one_call * 1.5, "max_tokens": 150_000, "timeout_s": 1.0}[limit]
    work = tmp_path / "wt"
    work.mkdir()
    reply = tool_call("list_files", {}, prompt_tokens=100_000, completion_tokens=1_000, delay_s=0.6)
    with OpenAIServer(default=reply) as server:
        result = BuiltinBackend().step(StepContext(
            run_id="r", attempt_id="a", agent="builtin", model=model, workdir=work, instruction="list the files",
            iteration=1, api_base=server.base_url, **{limit: share}))
        calls = len(server.requests)
    assert calls == 2 and len(result.usage) == 2  # stopped before a third call, its spend kept
    assert result.stop_kind is kind
    expected = StepErrorKind.TIMEOUT if kind is StopKind.WALL_TIME else StepErrorKind.BUDGET
    assert result.error_kind is expected and result.exit_code == (124 if kind is StopKind.WALL_TIME else 1)
    assert result.stopped_by is not None and result.stopped_by.endswith("(step)")
    stop = backend_stop(result.stopped_by, result.stop_kind)
    assert stop.kind is kind and stop.reason == result.stopped_by
    assert stop.kind.status == ("timeout" if kind is StopKind.WALL_TIME else "budget")


def test_token_budget_spent_mid_step_stops_the_builtin_attempt(store, fix_add_task, sandbox) -> None:
    with OpenAIServer(default=tool_call("list_files", {}, prompt_tokens=1_000, completion_tokens=10)) as server:
        result = start_run(RunRequest(
            instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None, task=fix_add_task,
            agents=[AgentSpec("builtin", "openai/m")], sandbox=sandbox, api_base=server.base_url,
            budgets=Budgets(max_iters=5, max_usd=None, max_tokens=2_500)), store=store)
        calls = len(server.requests)
    attempt = result.attempts[0]
    assert attempt.status == "budget"
    assert attempt.stop_reason == "budget: tokens 3030 >= 2500 (attempt)"
    assert calls == 3 and attempt.iterations == 1  # stopped mid-step, the check never ran
