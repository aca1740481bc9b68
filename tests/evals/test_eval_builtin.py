"""A model-driven agent in an eval: tokens and cost flow from the loop's attempts into the eval summary."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loopmeter.sandbox.probe import probe_bwrap
from tests.evals.conftest import GOLD, cli_json, small_suite
from tests.servers.openai_server import OpenAIServer, text, tool_call

pytestmark = pytest.mark.skipif(not probe_bwrap().usable, reason="bubblewrap is not usable here")


def test_builtin_agent_cost_per_solved_task_against_nop(tmp_path: Path) -> None:
    suite = small_suite(tmp_path / "suite", ["fix-pagination", "fix-roman-numerals"])
    fixed = (GOLD / "fix-pagination" / "solution" / "pager.py").read_text()
    home = tmp_path / "home"
    with OpenAIServer() as server:
        server.script(
            tool_call("write_file", {"path": "pager.py", "content": fixed}, prompt_tokens=900, completion_tokens=120),
            text("fixed paginate()", prompt_tokens=1100, completion_tokens=10),
            text("I could not work this one out", prompt_tokens=800, completion_tokens=12),
        )
        summary = cli_json(home, "eval", "run", str(suite), "--agent", "builtin:openai/gpt-4o-mini",
                           "--agent", "nop", "--api-base", server.base_url, "--concurrency", "1",
                           "--max-iters", "1")
        assert server.pending() == 0
    builtin, nop = summary["configs"]
    assert builtin["config"] == "builtin:openai/gpt-4o-mini" and builtin["model"] == "openai/gpt-4o-mini"
    assert builtin["passed"] == 1 and nop["passed"] == 0
    assert builtin["tokens_mean"]["input"] == (900 + 1100 + 800) / 2
    assert builtin["tokens_mean"]["output"] == (120 + 10 + 12) / 2
    assert builtin["cost_usd"] > 0
    assert builtin["cost_per_solved_usd"] == pytest.approx(builtin["cost_usd"])  # one solved task pays for both
    assert builtin["cost_per_task_usd"] == pytest.approx(builtin["cost_usd"] / 2)
    assert nop["cost_usd"] == 0.0 and nop["cost_per_solved_usd"] is None
    with sqlite3.connect(home / "loopmeter.db") as db:
        stored = db.execute("select sum(cost_usd) from usage where model = 'openai/gpt-4o-mini'").fetchone()[0]
    assert stored == pytest.approx(builtin["cost_usd"])
    (cmp,) = summary["comparisons"]
    assert cmp["verdict"] == "no detectable difference"  # 2 tasks cannot tell them apart
