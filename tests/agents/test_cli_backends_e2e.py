"""`loopmeter run --agent claude-code` end to end: the CLI, the loop, the bwrap sandbox and the
real Claude Code CLI against a scripted Anthropic server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agents.conftest import git_repo
from tests.conftest import loopmeter_cmd
from tests.servers.anthropic_server import AnthropicServer, bash_turn, text_turn

CHECK = "python3 -c 'import hello; assert hello.add(2, 3) == 5'"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "repo", "make hello.add work\n")


def test_loopmeter_run_with_real_claude_code_passes_and_stores_server_usage(repo, loopmeter_home, monkeypatch):
    if shutil.which("claude") is None:
        pytest.skip("claude is not installed (scripts/setup-system.sh installs it)")
    # the user's real key is present, but with a loopback --api-base the agent gets a placeholder instead
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy-never-sent")
    turns = [bash_turn("printf 'def add(a, b):\\n    return a + b\\n' > hello.py", input_tokens=900, output_tokens=40,
                       cache_read_input_tokens=250),
             text_turn("Created hello.py.", input_tokens=1000, output_tokens=5, cache_read_input_tokens=1150)]
    with AnthropicServer(turns) as srv:
        proc = subprocess.run(
            loopmeter_cmd("run", "create hello.py with add(a, b)", "--check", CHECK, "--agent", "claude-code",
                          "--repo", str(repo), "--api-base", srv.url, "--max-iters", "2", "--json"),
            capture_output=True, text=True, timeout=300)
        reported = srv.usage_by_model()
        keys_sent = {r["headers"].get("x-api-key") for r in srv.requests if r["method"] == "POST"}
        request_ids = [r.request_id for r in srv.scripted_replies()]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(proc.stdout)
    [attempt] = run["attempts"]
    assert run["status"] == "passed" and attempt["agent"] == "claude-code" and attempt["status"] == "passed"
    totals = {k: sum(t[k] for t in reported.values()) for k in ("input_tokens", "output_tokens",
                                                                  "cache_read_input_tokens")}
    assert attempt["input_tokens"] == totals["input_tokens"]
    assert attempt["output_tokens"] == totals["output_tokens"]
    assert attempt["cache_read_tokens"] == totals["cache_read_input_tokens"]
    assert attempt["cost_usd"] and attempt["cost_usd"] > 0
    assert keys_sent == {"loopmeter-local-no-key"}  # the user's key never went to the loopback server

    from sqlmodel import select

    from loopmeter.store import open_store
    from loopmeter.store.models import Usage

    store = open_store(f"sqlite:///{loopmeter_home / 'loopmeter.db'}")
    try:
        with store.session() as s:
            rows = list(s.exec(select(Usage).where(Usage.run_id == run["id"])))
    finally:
        store.dispose()
    assert {r.key for r in rows} >= {f"anthropic-req:{rid}" for rid in request_ids}
    assert all(r.source == "claude-json" and r.cost_source == "reported" for r in rows)


def test_loopmeter_run_with_real_codex_passes_and_stores_server_usage(repo, loopmeter_home, monkeypatch):
    if shutil.which("codex") is None:
        pytest.skip("codex is not installed (scripts/setup-system.sh installs it)")
    from tests.servers.responses_server import ResponsesServer, message_turn, shell_turn

    # no OpenAI key at all: a local --api-base needs none
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    turns = [shell_turn("printf 'def add(a, b):\\n    return a + b\\n' > hello.py", input_tokens=2000,
                        cached_tokens=500, output_tokens=60, reasoning_tokens=20),
             message_turn("Created hello.py.", input_tokens=2200, cached_tokens=1900, output_tokens=8)]
    with ResponsesServer(turns) as srv:
        proc = subprocess.run(
            loopmeter_cmd("run", "create hello.py with add(a, b)", "--check", CHECK, "--agent", "codex:gpt-5-codex",
                          "--repo", str(repo), "--api-base", srv.url, "--max-iters", "1", "--json"),
            capture_output=True, text=True, timeout=300)
        reported = srv.usage_total()
        auth = {r["headers"].get("authorization") for r in srv.requests if r["method"] == "POST"}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [attempt] = json.loads(proc.stdout)["attempts"]
    assert attempt["status"] == "passed" and attempt["model"] == "gpt-5-codex"
    assert attempt["input_tokens"] == reported["input_tokens"] - reported["cached_tokens"]
    assert attempt["cache_read_tokens"] == reported["cached_tokens"]
    assert attempt["output_tokens"] == reported["output_tokens"]
    assert auth == {"Bearer loopmeter-local-no-key"}


def test_loopmeter_run_with_cursor_records_usage_as_missing(repo, loopmeter_home, monkeypatch):
    from tests.conftest import FIXTURES

    monkeypatch.setenv("CURSOR_API_KEY", "sk-cursor-test")
    monkeypatch.setenv("PATH", f"{FIXTURES / 'agents' / 'bin'}:{os.environ['PATH']}")
    task = "create hello.py with add(a, b) [[fake-write:hello.py=def add(a, b):\\n    return a + b\\n]]"
    proc = subprocess.run(
        loopmeter_cmd("run", task, "--check", CHECK, "--agent", "cursor",
                      "--repo", str(repo), "--max-iters", "1", "--json"),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(proc.stdout)
    [attempt] = run["attempts"]
    assert attempt["status"] == "passed"
    # cursor reports no tokens and no dollars: the run object says missing, not 0 or $0
    assert attempt["input_tokens"] is None and attempt["output_tokens"] is None and attempt["cost_usd"] is None

    from sqlmodel import select

    from loopmeter.store import open_store
    from loopmeter.store.models import Usage

    store = open_store(f"sqlite:///{loopmeter_home / 'loopmeter.db'}")
    try:
        with store.session() as s:
            [row] = list(s.exec(select(Usage).where(Usage.run_id == run["id"])))
    finally:
        store.dispose()
    assert row.input_tokens is None and row.output_tokens is None and row.cost_usd is None
    assert row.cost_source == "unpriced" and row.agent == "cursor"
