"""cursor, gemini and aider backends, driven through step() in the real bubblewrap sandbox.

The agents themselves are fake executables on PATH (tests/fixtures/agents/bin) that
print each agent's real output format, error results and missing usage included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loopmeter.agents.base import StepContext, get_backend
from loopmeter.vocab import CostSource
from tests.agents.conftest import git_repo
from tests.conftest import FIXTURES

FAKE_BIN = FIXTURES / "agents" / "bin"
SECRET = "sk-test-secret-value-1234567890"


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "wt", "task repo\n")


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CURSOR_API_KEY", "GEMINI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(var, SECRET)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def make_ctx(agent: str, worktree: Path, runner, *, scenario: str = "success", write: str | None = "hello.txt=hi\\n",
             model: str | None = None, timeout_s: float = 60, path: str | None = None) -> StepContext:
    from loopmeter.policies import load_policy

    env = {"PATH": path if path is not None else f"{FAKE_BIN}:{os.environ['PATH']}", "FAKE_AGENT_SCENARIO": scenario}
    if write:
        env["FAKE_AGENT_WRITE"] = write
    return StepContext(run_id="run1", attempt_id="att1", agent=agent, model=model, workdir=worktree,
                       instruction="create hello.txt containing hi", iteration=1, sandbox=runner,
                       policy=load_policy("default"), timeout_s=timeout_s, env=env)


def calls(worktree: Path, agent: str) -> list[dict]:
    home = worktree.parent / f".{worktree.name}.{agent}-home"
    lines = (home / "fake-agent-calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def stored_usage(store) -> list:
    from sqlmodel import select

    from loopmeter.store.models import Usage

    with store.session() as s:
        return list(s.exec(select(Usage).order_by(Usage.key)))


def audit_text(store) -> str:
    from sqlmodel import select

    from loopmeter.store.models import Audit

    with store.session() as s:
        return "\n".join(json.dumps(a.model_dump(), default=str) for a in s.exec(select(Audit)))


# -- cursor --------------------------------------------------------------------------------------


def test_cursor_success_edits_worktree_and_stores_a_row_with_null_tokens(worktree, runner, store, keys):
    result = get_backend("cursor").step(make_ctx("cursor", worktree, runner, model="gpt-5"))
    assert result.exit_code == 0 and result.error is None
    assert (worktree / "hello.txt").read_text() == "hi\n"
    assert result.summary == "I created `hello.txt`."
    assert len(result.usage) == 1
    row = result.usage[0]
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cost_usd) == (None, None, None, None)
    assert row.cost_source == CostSource.UNPRICED and row.source == "cursor-json"
    assert row.request_id and row.session_id == result.session_id and row.latency_ms == 4210
    assert row.key == "loop:att1:1:1" and row.model == "gpt-5"
    store.add_usage(result.usage)
    [saved] = stored_usage(store)
    assert saved.input_tokens is None and saved.output_tokens is None and saved.cost_usd is None
    assert saved.cost_source == "unpriced"
    [call] = calls(worktree, "cursor")
    argv = call["argv"]
    assert argv[:5] == ["-p", "--output-format", "json", "--force", "--model"]
    assert argv[-1] == "create hello.txt containing hi"
    assert call["cwd"] == str(worktree) and call["keys"]["CURSOR_API_KEY"]
    assert not call["keys"]["GEMINI_API_KEY"]  # only the secret the policy names for agent:cursor
    assert SECRET not in audit_text(store)


def test_cursor_without_request_id_stores_none(worktree, runner, keys):
    result = get_backend("cursor").step(make_ctx("cursor", worktree, runner, scenario="no-request-id"))
    assert result.usage[0].request_id is None and result.usage[0].model is None


def test_cursor_failure_has_no_json_so_no_usage_and_the_stderr_message(worktree, runner, keys):
    result = get_backend("cursor").step(make_ctx("cursor", worktree, runner, scenario="error"))
    assert result.exit_code == 1 and result.usage == []
    assert result.error_kind == "agent" and "upstream model provider failed" in (result.error or "")


def test_cursor_auth_failure_is_an_auth_error(worktree, runner, keys):
    result = get_backend("cursor").step(make_ctx("cursor", worktree, runner, scenario="auth"))
    assert result.error_kind == "auth" and result.usage == [] and "CURSOR_API_KEY" in (result.error or "")


def test_missing_key_is_refused_before_running(worktree, runner, monkeypatch):
    monkeypatch.delenv("CURSOR_API_KEY", raising=False)
    monkeypatch.setenv("PATH", f"{FAKE_BIN}:{os.environ['PATH']}")
    backend = get_backend("cursor")
    ok, hint = backend.available()
    assert not ok and "loopmeter auth set cursor" in (hint or "")
    result = backend.step(make_ctx("cursor", worktree, runner))
    assert result.error_kind == "auth" and not (worktree / "hello.txt").exists()


# -- gemini --------------------------------------------------------------------------------------


def test_gemini_reports_tokens_per_model(worktree, runner, store, keys):
    from loopmeter.telemetry.pricing import default_price_table

    result = get_backend("gemini").step(make_ctx("gemini", worktree, runner, scenario="two-models"))
    assert result.exit_code == 0 and result.error is None
    assert (worktree / "hello.txt").exists() and result.summary == "Created hello.txt."
    rows = {r.model: r for r in result.usage}
    assert set(rows) == {"gemini-2.5-pro", "gemini-2.5-flash-lite"}
    pro = rows["gemini-2.5-pro"]
    # prompt 24939 includes 21263 cached; 12 tool-use prompt tokens; 20 candidates + 154 thoughts
    assert (pro.input_tokens, pro.cache_read_tokens, pro.output_tokens, pro.reasoning_tokens) == (3688, 21263, 174, 154)
    assert pro.latency_ms == 5053 and pro.session_id == result.session_id and pro.source == "gemini-json"
    table = default_price_table()
    for r in result.usage:
        expected = table.cost(r.model, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                              cache_read_tokens=r.cache_read_tokens)
        if expected is None:
            assert r.cost_usd is None and r.cost_source == CostSource.UNPRICED
        else:
            assert r.cost_usd == pytest.approx(expected) and r.cost_source == CostSource.CALCULATED
    assert store.add_usage(result.usage) == 2
    argv = calls(worktree, "gemini")[0]["argv"]
    assert argv[0] == "-p" and argv[2:] == ["--output-format", "json", "--approval-mode", "yolo", "--skip-trust"]


def test_gemini_turn_limit_exit_53_is_a_budget_stop_without_usage(worktree, runner, keys):
    result = get_backend("gemini").step(make_ctx("gemini", worktree, runner, scenario="turn-limit"))
    assert result.exit_code == 53
    assert (result.error_kind, result.stopped_by) == ("budget", "max_turns")
    assert "max session turns" in (result.error or "") and result.usage == []
    assert result.session_id  # from the error object on stderr


def test_gemini_auth_exit_41(worktree, runner, keys):
    result = get_backend("gemini").step(make_ctx("gemini", worktree, runner, scenario="auth"))
    assert result.exit_code == 41 and result.error_kind == "auth" and result.usage == []


def test_gemini_without_stats_stores_missing_usage(worktree, runner, keys):
    result = get_backend("gemini").step(make_ctx("gemini", worktree, runner, scenario="no-stats", model="gemini-2.5-pro"))
    assert result.error is None
    [row] = result.usage
    assert row.input_tokens is None and row.output_tokens is None and row.cost_source == CostSource.UNPRICED
    assert row.model == "gemini-2.5-pro"


# -- aider ---------------------------------------------------------------------------------------


def test_aider_parses_rounded_tokens_and_reported_cost(worktree, runner, store, keys):
    result = get_backend("aider").step(make_ctx("aider", worktree, runner, model="anthropic/claude-sonnet-4-20250514"))
    assert result.exit_code == 0 and result.error is None
    assert (worktree / "hello.txt").read_text() == "hi\n"
    [row] = result.usage
    # "2.4k sent, 1.2k cache write, 12k cache hit, 311 received": Anthropic's "sent" excludes hits
    assert (row.input_tokens, row.cache_write_tokens, row.cache_read_tokens, row.output_tokens) == (1200, 1200, 12000, 311)
    assert row.cost_usd == pytest.approx(0.0093) and row.cost_source == CostSource.REPORTED
    assert row.source == "aider-text" and row.provider == "anthropic"
    argv = calls(worktree, "aider")[0]["argv"]
    assert argv[:2] == ["--message", "create hello.txt containing hi"]
    for flag in ("--yes-always", "--no-auto-commits", "--no-git"):
        assert flag in argv
    assert not (worktree / ".aider.chat.history.md").exists()  # history goes to the private HOME
    store.add_usage(result.usage)
    assert stored_usage(store)[0].cost_source == "reported"


def test_aider_one_row_per_model_call(worktree, runner, keys):
    result = get_backend("aider").step(make_ctx("aider", worktree, runner, scenario="reflection"))
    assert [r.cost_usd for r in result.usage] == [pytest.approx(0.0093), pytest.approx(0.0061)]
    assert [r.key for r in result.usage] == ["loop:att1:1:1", "loop:att1:1:2"]
    # the model comes from aider's banner when none was asked for
    assert result.usage[1].model == "anthropic/claude-sonnet-4-20250514"
    assert (result.usage[1].input_tokens, result.usage[1].cache_read_tokens) == (3100, 13000)


def test_aider_unpriced_line_is_priced_only_from_the_table(worktree, runner, keys):
    result = get_backend("aider").step(make_ctx("aider", worktree, runner, scenario="unpriced", model="openai/local-model"))
    [row] = result.usage
    assert (row.input_tokens, row.output_tokens) == (1800, 120)
    assert row.cost_usd is None and row.cost_source == CostSource.UNPRICED


def test_aider_auth_error_in_text(worktree, runner, keys):
    result = get_backend("aider").step(make_ctx("aider", worktree, runner, scenario="auth"))
    assert result.exit_code == 0 and result.error_kind == "auth" and result.usage == []
    assert "AuthenticationError" in (result.error or "")


def test_aider_without_usage_line_stores_missing_usage(worktree, runner, keys):
    result = get_backend("aider").step(make_ctx("aider", worktree, runner, scenario="no-usage"))
    [row] = result.usage
    assert row.input_tokens is None and row.output_tokens is None and row.cost_source == CostSource.UNPRICED


# -- shared behaviour ----------------------------------------------------------------------------


def test_wall_clock_budget_kills_the_agent(worktree, runner, keys):
    result = get_backend("cursor").step(make_ctx("cursor", worktree, runner, scenario="hang", timeout_s=3))
    assert result.exit_code == 124
    assert (result.error_kind, result.stopped_by) == ("timeout", "max_minutes")
    assert result.usage == []


def test_not_installed_says_how_to_install(worktree, runner, keys, tmp_path):
    for name, needle in (("cursor", "cursor.com/install"), ("gemini", "@google/gemini-cli"), ("aider", "aider-install")):
        result = get_backend(name).step(make_ctx(name, worktree, runner, path=str(tmp_path)))
        assert result.exit_code == 127 and result.error_kind == "not_installed" and needle in result.summary


def test_parsers_do_not_choke_on_garbage():
    from loopmeter.agents import aider, cursor, gemini

    ctx = StepContext(run_id="r", attempt_id="a", agent="x", model=None, workdir=Path("."), instruction="", iteration=1)
    assert cursor.parse_result(None, ctx).usage == []
    assert gemini.parse_output(None, None, ctx).usage == []
    assert aider.parse_text("Tokens: lots sent\n", ctx, exit_code=1).usage == []


def test_feedback_in_the_prompt_is_capped():
    from loopmeter.agents._cli import FEEDBACK_LIMIT, prompt_for

    ctx = StepContext(run_id="r", attempt_id="a", agent="x", model=None, workdir=Path("."), instruction="do it",
                      iteration=2, feedback="E" * 200_000 + "LAST LINE")
    prompt = prompt_for(ctx)
    assert prompt.startswith("do it") and "LAST LINE" in prompt and len(prompt) < FEEDBACK_LIMIT + 300


def test_claude_stream_without_transcript_reconciles_to_model_usage():
    """Claude Code's stream events (recorded from 2.1.197) carry the output count known when a block
    ended; without a readable transcript the per-model result fills in the rest, exactly."""
    from loopmeter.agents.claude_code import parse_stream

    def assistant(msg_id: str, req: str, inp: int, cr: int, cw: int) -> dict:
        return {"type": "assistant", "request_id": req, "session_id": "s1",
                "message": {"id": msg_id, "model": "claude-opus-4-8", "content": [{"type": "text", "text": "x"}],
                            "usage": {"input_tokens": inp, "output_tokens": 1, "cache_read_input_tokens": cr,
                                      "cache_creation_input_tokens": cw}}}

    events = [
        {"type": "system", "subtype": "init", "session_id": "s1", "model": "claude-opus-4-8[1m]"},
        assistant("msg_1", "req_1", 120, 50, 10), assistant("msg_1", "req_1", 120, 50, 10),  # one response, 2 blocks
        assistant("msg_2", "req_2", 200, 0, 0),
        {"type": "result", "subtype": "success", "is_error": False, "result": "all done", "session_id": "s1",
         "total_cost_usd": 0.0016035,
         "modelUsage": {"claude-opus-4-8[1m]": {"inputTokens": 327, "outputTokens": 38, "cacheReadInputTokens": 50,
                                                "cacheCreationInputTokens": 10, "costUSD": 0.0016035}}},
    ]
    ctx = StepContext(run_id="r", attempt_id="a", agent="claude-code", model=None, workdir=Path("."),
                      instruction="", iteration=1)
    out = parse_stream(events, ctx)
    assert out.error is None and out.summary == "all done" and out.session_id == "s1"
    keys = [r.key for r in out.usage]
    assert keys == ["anthropic-req:req_1", "anthropic-req:req_2", "loop:a:1:1"]
    assert sum(r.input_tokens for r in out.usage) == 327
    assert sum(r.output_tokens for r in out.usage) == 38
    assert sum(r.cache_read_tokens for r in out.usage) == 50
    assert sum(r.cache_write_tokens for r in out.usage) == 10
    assert sum(r.cost_usd for r in out.usage) == pytest.approx(0.0016035)
    assert {r.cost_source for r in out.usage} == {CostSource.REPORTED}
    assert {r.model for r in out.usage} == {"claude-opus-4-8"}


def test_claude_result_missing_prices_rows_from_the_table_or_leaves_them_unpriced():
    from loopmeter.agents.claude_code import parse_stream

    events = [{"type": "assistant", "request_id": "req_9", "session_id": "s",
               "message": {"id": "m9", "model": "no-such-model", "usage": {"input_tokens": 5, "output_tokens": 1}}}]
    ctx = StepContext(run_id="r", attempt_id="a", agent="claude-code", model=None, workdir=Path("."),
                      instruction="", iteration=1)
    out = parse_stream(events, ctx)
    assert out.error_kind == "agent" and "without a result" in (out.error or "")
    [row] = out.usage
    assert row.cost_usd is None and row.cost_source == CostSource.UNPRICED
