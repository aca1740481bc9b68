"""loopmeter and ccusage agree, token for token, per day and model, on a generated corpus."""

from __future__ import annotations

import pytest

from tests.fixtures.logs.ccusage import ccusage_daily, ccusage_status, loopmeter_daily
from tests.fixtures.logs.corpus import generate
from tests.telemetry.ingest.conftest import usage_json

CCUSAGE, WHY = ccusage_status()
pytestmark = pytest.mark.skipif(CCUSAGE is None, reason=WHY)


def test_same_daily_tokens_as_ccusage_for_claude_code_and_codex(tmp_path, agent_env):
    expected = generate(tmp_path / "corpus", mb=12, file_mb=0.5)
    env = {**agent_env, "CLAUDE_CONFIG_DIR": str(tmp_path / "corpus" / "claude"),
           "CODEX_HOME": str(tmp_path / "corpus" / "codex")}
    ours = usage_json(env, "daily", "--timezone", "UTC")

    ours_claude = loopmeter_daily(ours, "claude-code-log")
    theirs_claude = ccusage_daily("claude", env)
    assert ours_claude == theirs_claude
    assert ours_claude == {k: (t.input, t.output, t.cache_write, t.cache_read) for k, t in expected.claude.items()}

    ours_codex = loopmeter_daily(ours, "codex-log")
    theirs_codex = ccusage_daily("codex", env)
    assert ours_codex == theirs_codex
    assert ours_codex == {k: (t.input, t.output, t.cache_write, t.cache_read) for k, t in expected.codex.items()}
    assert len(ours_claude) >= 10 and len(ours_codex) >= 10  # many days and models compared
