"""The real Claude Code CLI (node) inside the sandbox reaches a scripted server on the host's
127.0.0.1:PORT with the same ANTHROPIC_BASE_URL, through the bridge and the egress proxy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from loopmeter.policies import load_policy
from loopmeter.store import Audit
from tests.servers.anthropic_server import AnthropicServer, text_turn, write_turn

pytestmark = pytest.mark.skipif(shutil.which("claude") is None, reason="the claude CLI is not installed")


def test_claude_code_in_the_sandbox_reaches_a_host_loopback_model_server(runner, store, workdir: Path,
                                                                         tmp_path: Path) -> None:
    home = tmp_path / "agent-home"
    home.mkdir()
    with AnthropicServer([write_turn(str(workdir / "hello.txt"), "hi\n"), text_turn("done")]) as srv:
        res = runner.run(
            ["claude", "-p", "write hello.txt", "--output-format", "json", "--dangerously-skip-permissions"],
            workdir=workdir, policy=load_policy("default"), role="agent", actor="agent:claude-code",
            env={"ANTHROPIC_BASE_URL": srv.url, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                 "DISABLE_AUTOUPDATER": "1"},
            secrets={"ANTHROPIC_API_KEY": "sk-ant-sandbox-test"}, extra_allow=[f"127.0.0.1:{srv.port}"],
            home=home, timeout_s=120)
    assert res.exit_code == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["result"] == "done"
    assert (workdir / "hello.txt").read_text() == "hi\n"
    with store.engine.connect() as conn:
        rows = conn.execute(select(Audit.__table__).where(Audit.__table__.c.layer == "proxy")).all()
    assert any(r.target == f"127.0.0.1:{srv.port}" and r.decision == "allow" for r in rows)
    assert all("sk-ant-sandbox-test" not in (r.detail or "") for r in rows)
