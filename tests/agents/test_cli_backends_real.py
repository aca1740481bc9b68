"""The real Claude Code and Codex CLIs, driven by their backends inside the bubblewrap sandbox.

Each agent talks to a scripted model server on the host's loopback, reached through
the sandbox's egress proxy, which the policy lets through for that one host:port
(the same way a user points a sandboxed agent at a local model server). The agent
really edits the worktree with its own tools, the check passes in the sandbox, and
the usage stored equals what the server reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loopmeter.agents.base import StepContext, get_backend
from loopmeter.vocab import CostSource
from tests.agents.conftest import git_repo
from tests.fixtures.agents.gemini_server import GeminiServer, call_turn
from tests.fixtures.agents.gemini_server import text_turn as gemini_text
from tests.servers.anthropic_server import (
    AnthropicServer,
    bash_turn,
    error_turn,
    text_turn,
    tool_turn,
    write_turn,
)
from tests.servers.responses_server import ResponsesServer, http_error_turn, message_turn, shell_turn

CHECK = ["python3", "-c", "import hello; assert hello.add(2, 3) == 5; print('ok')"]
CODE = "def add(a, b):\n    return a + b\n"


def need(binary: str) -> None:
    if shutil.which(binary) is None:
        how = ("pip install aider-chat (in a virtualenv)" if binary == "aider"
               else "scripts/setup-system.sh installs it")
        pytest.skip(f"{binary} is not installed ({how})")


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "wt", "make hello.add work\n")


@pytest.fixture
def policy():
    from loopmeter.policies import load_policy

    return load_policy("default")


@pytest.fixture(autouse=True)
def no_real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


def ctx_for(agent: str, worktree: Path, runner, policy, api_base: str, *, model: str | None, iteration: int = 1,
            feedback: str | None = None) -> StepContext:
    return StepContext(run_id="run1", attempt_id="att1", agent=agent, model=model, workdir=worktree,
                       instruction="create hello.py with add(a, b)", iteration=iteration, feedback=feedback,
                       sandbox=runner, policy=policy, timeout_s=240, max_usd=1.0, api_base=api_base,
                       state_dir=worktree.parent / "state")


def run_check(runner, worktree: Path, policy) -> int:
    res = runner.run(CHECK, workdir=worktree, policy=policy, role="check", actor="check", timeout_s=60)
    return res.exit_code


def audit_rows(store) -> list:
    from sqlmodel import select

    from loopmeter.store.models import Audit

    with store.session() as s:
        return list(s.exec(select(Audit).order_by(Audit.seq)))


def stored(store) -> list:
    from sqlmodel import select

    from loopmeter.store.models import Usage

    with store.session() as s:
        return list(s.exec(select(Usage)))


def proxy_connects(store, target: str) -> list:
    return [a for a in audit_rows(store) if a.layer == "proxy" and a.action == "connect" and a.target == target]


# -- Claude Code -----------------------------------------------------------------------------------


def test_real_claude_code_edits_in_sandbox_and_usage_matches_server(worktree, runner, policy, store):
    need("claude")
    turns = [
        write_turn(str(worktree / "hello.py"), CODE, input_tokens=1520, output_tokens=64,
                   cache_read_input_tokens=3000, cache_creation_input_tokens=700),
        text_turn("Created hello.py with add().", input_tokens=1700, output_tokens=12, cache_read_input_tokens=3700),
    ]
    with AnthropicServer(turns) as srv:
        ctx = ctx_for("claude-code", worktree, runner, policy, srv.url, model="claude-sonnet-4-5-20250929")
        result = get_backend("claude-code").step(ctx)
        assert result.error is None, result.error
        assert result.exit_code == 0 and result.summary == "Created hello.py with add()."
        assert (worktree / "hello.py").read_text() == CODE  # written by Claude Code's own Write tool
        assert run_check(runner, worktree, policy) == 0
        assert srv.remaining == 0
        reported = srv.usage_by_model()
        scripted_ids = [r.request_id for r in srv.scripted_replies()]

    store.add_usage(result.usage)
    rows = stored(store)
    assert {r.key for r in rows} >= {f"anthropic-req:{rid}" for rid in scripted_ids}
    for model, totals in reported.items():
        mine = [r for r in rows if r.model == model]
        assert sum(r.input_tokens or 0 for r in mine) == totals["input_tokens"]
        assert sum(r.output_tokens or 0 for r in mine) == totals["output_tokens"]
        assert sum(r.cache_read_tokens or 0 for r in mine) == totals["cache_read_input_tokens"]
        assert sum(r.cache_write_tokens or 0 for r in mine) == totals["cache_creation_input_tokens"]
    assert all(r.cost_source == CostSource.REPORTED and r.source == "claude-json" for r in rows)
    assert sum(r.cost_usd for r in rows) == pytest.approx(result.cost_usd)
    assert all(r.run_id == "run1" and r.attempt_id == "att1" and r.agent == "claude-code" for r in rows)
    # the model server was reached through the egress proxy, allowed for exactly that host:port
    allowed = proxy_connects(store, f"127.0.0.1:{srv.port}")
    assert allowed and all(a.decision == "allow" for a in allowed)
    # the agent got a placeholder, never a real key, for a loopback server
    assert srv.requests[0]["headers"].get("x-api-key", "").startswith("loopmeter-local")


def test_real_claude_code_resumes_its_session_on_the_next_iteration(worktree, runner, policy, store):
    need("claude")
    with AnthropicServer([bash_turn("echo 'def add(a, b):' > hello.py"), text_turn("first try")]) as srv:
        first = get_backend("claude-code").step(ctx_for("claude-code", worktree, runner, policy, srv.url, model=None))
        assert first.error is None, first.error
        assert run_check(runner, worktree, policy) != 0
        # Claude Code's Write refuses to overwrite a file it has not read: Read first, as a model would.
        srv.add(tool_turn("Read", {"file_path": str(worktree / "hello.py")}),
                write_turn(str(worktree / "hello.py"), CODE), text_turn("fixed"))
        n_before = len(srv.requests)
        second = get_backend("claude-code").step(ctx_for("claude-code", worktree, runner, policy, srv.url, model=None,
                                                         iteration=2, feedback="SyntaxError: hello.py line 1"))
        assert second.error is None, second.error
        assert second.session_id == first.session_id  # --resume of the same session
        later = [r for r in srv.requests[n_before:] if r["body"].get("tools")]
        text = json.dumps(later[0]["body"]["messages"])
        assert "first try" in text and "SyntaxError" in text  # the old conversation plus the feedback
        assert run_check(runner, worktree, policy) == 0
        reported = srv.usage_by_model()
    first_keys = {r.key for r in first.usage}
    assert first_keys and not first_keys & {r.key for r in second.usage}  # nothing counted twice
    assert store.add_usage(first.usage) + store.add_usage(second.usage) == len(first.usage) + len(second.usage)
    rows = stored(store)
    for field, server_field in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens")):
        assert sum(getattr(r, field) or 0 for r in rows) == sum(t[server_field] for t in reported.values())


def test_real_claude_code_policy_denied_command_is_refused(worktree, runner, policy):
    need("claude")
    with AnthropicServer([bash_turn("git push origin main"), text_turn("could not push")]) as srv:
        result = get_backend("claude-code").step(ctx_for("claude-code", worktree, runner, policy, srv.url, model=None))
        assert result.error is None
        tool_results = [b for e in result.transcript if e.get("type") == "user"
                        for b in (e.get("message") or {}).get("content") or [] if isinstance(b, dict)]
        assert any(b.get("is_error") and "denied" in json.dumps(b).lower() for b in tool_results)


def test_real_claude_code_stops_at_the_dollar_budget_and_keeps_what_was_spent(worktree, runner, policy, store):
    need("claude")
    turns = [bash_turn("echo 1 > a.txt", input_tokens=200_000, output_tokens=1000), bash_turn("echo 2 > b.txt")]
    with AnthropicServer(turns) as srv:
        ctx = ctx_for("claude-code", worktree, runner, policy, srv.url, model="claude-sonnet-4-5-20250929")
        ctx.max_usd = 0.5  # passed as --max-budget-usd; the first call alone costs more
        result = get_backend("claude-code").step(ctx)
        assert len(srv.scripted_replies()) == 1
    assert (result.error_kind, result.stopped_by) == ("budget", "max_usd")
    assert not (worktree / "a.txt").exists()  # stopped before running the tool
    assert result.cost_usd is not None and result.cost_usd > 0.5
    assert store.add_usage(result.usage) == len(result.usage) >= 1
    assert sum(r.input_tokens or 0 for r in stored(store)) >= 200_000


def test_real_claude_code_is_killed_when_its_tokens_pass_the_token_budget(worktree, runner, policy):
    need("claude")
    turns = [bash_turn("sleep 30", input_tokens=60_000, output_tokens=10), text_turn("never reached")]
    with AnthropicServer(turns) as srv:
        ctx = ctx_for("claude-code", worktree, runner, policy, srv.url, model=None)
        ctx.max_tokens = 50_000
        result = get_backend("claude-code").step(ctx)
        assert srv.remaining == 1
    assert (result.error_kind, result.stopped_by) == ("budget", "max_tokens")
    assert sum(r.input_tokens or 0 for r in result.usage) >= 60_000  # what was spent is still recorded


def test_real_claude_code_rejected_key_is_an_auth_error_not_minutes_of_retries(worktree, runner, policy):
    need("claude")
    with AnthropicServer([], exhausted=error_turn(401, "authentication_error", "invalid x-api-key")) as srv:
        result = get_backend("claude-code").step(ctx_for("claude-code", worktree, runner, policy, srv.url, model=None))
        assert len(srv.requests) <= 3
    assert result.error_kind == "auth" and result.usage == []


@pytest.mark.parametrize("agent", ["claude-code", "codex"])
def test_real_agent_whose_model_server_is_unreachable_fails_fast_as_infra(agent, worktree, runner, policy):
    need("claude" if agent == "claude-code" else agent)
    from tests.conftest import free_port

    ctx = ctx_for(agent, worktree, runner, policy, f"http://127.0.0.1:{free_port()}", model=None)
    ctx.timeout_s = 60
    result = get_backend(agent).step(ctx)
    assert result.error_kind == "infra" and "egress proxy" in (result.error or "")
    assert result.usage == [] and result.exit_code != 124  # stopped, not left retrying until the timeout


# -- Codex -----------------------------------------------------------------------------------------


def test_real_codex_runs_its_shell_tool_in_sandbox_and_usage_matches_server(worktree, runner, policy, store):
    need("codex")
    turns = [
        shell_turn("printf 'def add(a, b):\\n    return a + b\\n' > hello.py", input_tokens=2400, cached_tokens=600,
                   output_tokens=90, reasoning_tokens=40),
        message_turn("Created hello.py.", input_tokens=2900, cached_tokens=2300, output_tokens=15),
    ]
    with ResponsesServer(turns) as srv:
        ctx = ctx_for("codex", worktree, runner, policy, srv.url, model="gpt-5-codex")
        result = get_backend("codex").step(ctx)
        assert result.error is None, result.error
        assert result.exit_code == 0 and result.summary == "Created hello.py."
        assert (worktree / "hello.py").read_text() == CODE  # written by Codex's exec_command tool
        assert run_check(runner, worktree, policy) == 0
        reported = srv.usage_total()
        assert srv.requests[0]["body"]["model"] == "gpt-5-codex"
        assert any(t.get("name") == "exec_command" for t in srv.requests[0]["body"]["tools"])

    store.add_usage(result.usage)
    rows = stored(store)
    assert sum(r.input_tokens for r in rows) == reported["input_tokens"] - reported["cached_tokens"]
    assert sum(r.cache_read_tokens for r in rows) == reported["cached_tokens"]
    assert sum(r.output_tokens for r in rows) == reported["output_tokens"]
    assert sum(r.reasoning_tokens for r in rows) == reported["reasoning_tokens"]
    assert all(r.source == "codex-json" and r.model == "gpt-5-codex" for r in rows)
    assert all(r.cost_source in ("calculated", "unpriced") for r in rows)  # Codex reports no dollars
    assert proxy_connects(store, f"127.0.0.1:{srv.port}")


def test_real_codex_failed_turn_is_an_error_without_usage(worktree, runner, policy):
    need("codex")
    fail = http_error_turn(401, "Incorrect API key provided")
    with ResponsesServer([], exhausted=fail) as srv:
        result = get_backend("codex").step(ctx_for("codex", worktree, runner, policy, srv.url, model="gpt-5-codex"))
    assert result.exit_code != 0 and result.usage == []
    assert result.error_kind == "auth" and "401" in (result.error or "")


# -- Gemini CLI ------------------------------------------------------------------------------------


def test_real_gemini_cli_writes_with_its_tool_in_sandbox_and_usage_matches_server(worktree, runner, policy, store,
                                                                                 monkeypatch):
    need("gemini")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    turns = [call_turn("write_file", {"file_path": str(worktree / "hello.py"), "content": CODE},
                       prompt=5000, cached=3000, candidates=40, thoughts=12),
             gemini_text("Created hello.py.", prompt=5200, cached=4800, candidates=8)]
    with GeminiServer(turns) as srv:
        result = get_backend("gemini").step(ctx_for("gemini", worktree, runner, policy, srv.url, model="gemini-2.5-pro"))
        assert result.error is None, result.error
        assert result.summary == "Created hello.py." and srv.remaining == 0
        assert (worktree / "hello.py").read_text() == CODE  # written by Gemini CLI's own write_file tool
        assert run_check(runner, worktree, policy) == 0
        reported = srv.usage_by_model()
        assert {r["headers"].get("x-goog-api-key") for r in srv.requests} == {"loopmeter-local-no-key"}
    store.add_usage(result.usage)
    rows = stored(store)
    for model, u in reported.items():
        [row] = [r for r in rows if r.model == model]
        assert row.input_tokens == u["prompt"] - u["cached"] and row.cache_read_tokens == u["cached"]
        assert row.output_tokens == u["candidates"] + u["thoughts"] and row.reasoning_tokens == u["thoughts"]
        assert row.source == "gemini-json" and row.session_id == result.session_id
    assert proxy_connects(store, f"127.0.0.1:{srv.port}")


# -- Aider (runs where `aider` is installed; CI does not install it) --------------------------------


def test_real_aider_edits_in_sandbox_and_reports_the_servers_usage(worktree, runner, policy, store):
    need("aider")
    from tests.servers.openai_server import OpenAIServer, text

    reply = "I'll create it.\n\nhello.py\n```python\n" + CODE + "```\n"  # aider's "whole" edit format
    with OpenAIServer() as srv:
        srv.script(text(reply, prompt_tokens=2345, completion_tokens=67))
        ctx = ctx_for("aider", worktree, runner, policy, srv.base_url, model="openai/test-model")
        result = get_backend("aider").step(ctx)
        assert result.error is None, result.error
        assert (worktree / "hello.py").read_text() == CODE
        assert run_check(runner, worktree, policy) == 0
        assert {r["headers"].get("Authorization") or r["headers"].get("authorization")
                for r in srv.requests} == {"Bearer loopmeter-local-no-key"}
    [row] = result.usage
    # aider prints "Tokens: 2.3k sent, 67 received.": the server's numbers, rounded by aider
    assert (row.input_tokens, row.output_tokens) == (2300, 67)
    assert row.model == "openai/test-model" and row.source == "aider-text"
    assert not (worktree / ".aider.chat.history.md").exists()
