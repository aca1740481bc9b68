"""Model tasks end to end: the example suite A/B's two model names against a scripted OpenAI server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from loopmeter.evals.model_tasks import load_dataset
from loopmeter.evals.suite import load_suite
from tests.conftest import free_port
from tests.evals.conftest import cli, cli_json
from tests.servers.openai_server import OpenAIServer, text

ARITH = load_suite("model-arith")
ITEMS = load_dataset(ARITH.tasks[0])


def test_two_models_accuracy_latency_and_cost_per_request(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with OpenAIServer() as server:
        for i, item in enumerate(ITEMS):  # the priced model is always right, slower
            server.script(text(f"{item.target}", prompt_tokens=40, completion_tokens=3, delay_s=0.05),
                          model="gpt-4o-mini")
            # the local model gets 6 of 10 right
            answer = f"The answer is {item.target}." if i < 6 else "I am not sure, maybe 3"
            server.script(text(answer, prompt_tokens=40, completion_tokens=8), model="local-small")
        summary = cli_json(home, "eval", "run", "model-arith", "--agent", "openai/gpt-4o-mini",
                           "--agent", "openai/local-small", "--api-base", server.base_url, "--concurrency", "1")
        assert server.pending() == 0
        system = server.requests[0]["body"]["messages"][0]
        assert system["role"] == "system" and "number only" in system["content"]
    big, small = summary["configs"]
    assert (big["model"], small["model"]) == ("openai/gpt-4o-mini", "openai/local-small")
    assert big["pass_rate"] == 1.0 and small["pass_rate"] == 0.6
    assert big["n_tasks"] == small["n_tasks"] == len(ITEMS)
    assert big["p50_latency_ms"] >= 50 and big["p95_latency_ms"] >= big["p50_latency_ms"]
    assert small["p50_latency_ms"] is not None
    assert big["cost_per_request_usd"] is not None and big["cost_per_request_usd"] > 0
    assert big["cost_per_solved_usd"] == pytest.approx(big["cost_usd"] / 10)
    # a model without a price is unpriced, never $0
    assert small["cost_usd"] is None and small["cost_per_request_usd"] is None
    assert small["unpriced_cells"] == len(ITEMS)
    (cmp,) = summary["comparisons"]
    assert cmp["diff"] == pytest.approx(-0.4) and cmp["p_method"] == "mcnemar-exact"
    assert cmp["p_value"] == pytest.approx(2 * 1 / 16)  # b=4, c=0: 2 * (1/2)^4
    with sqlite3.connect(home / "loopmeter.db") as db:
        usage = db.execute("select model, count(*), sum(cost_source = 'calculated'), sum(cost_source = 'unpriced'),"
                           " sum(input_tokens), sum(output_tokens) from usage group by model order by model"
                           ).fetchall()
    assert usage == [("openai/gpt-4o-mini", 10, 10, 0, 400, 30), ("openai/local-small", 10, 0, 10, 400, 80)]
    md = cli(home, "eval", "report", summary["run_id"], "--format", "md").stdout
    assert "unpriced" in md and " ms" in md


def test_unreachable_model_server_counts_infra_errors_in_the_denominator(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    summary = cli_json(tmp_path, "eval", "run", "model-arith", "--agent", "openai/gpt-4o-mini", "--api-base", dead,
                       "--concurrency", "4")
    (cfg,) = summary["configs"]
    assert cfg["n_cells"] == len(ITEMS) and cfg["pass_rate"] == 0.0
    assert cfg["errors"] == len(ITEMS) and cfg["error_kinds"] == {"infra": len(ITEMS)}
    # no call reached a model: nothing was spent, and that is known (docs/evals.md), not unpriced
    assert (cfg["cost_usd"], cfg["unpriced_cells"], cfg["cost_per_task_usd"]) == (0.0, 0, 0.0)


def test_bad_dataset_line_names_file_and_line(tmp_path: Path) -> None:
    task = tmp_path / "t"
    task.mkdir()
    (task / "task.toml").write_text('id = "t"\nkind = "model"\ndataset = "d.jsonl"\nscorer = "exact"\n')
    (task / "d.jsonl").write_text(json.dumps({"input": "a", "target": "b"}) + "\n{\"input\": \"x\"}\n")
    out = cli(tmp_path, "eval", "run", str(task), "--agent", "openai/x", check=False)
    assert out.returncode == 2
    assert "d.jsonl:2" in out.stderr and "target" in out.stderr


def test_max_usd_stops_the_eval_and_resume_finishes_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with OpenAIServer(default=text("42", prompt_tokens=1000, completion_tokens=10)) as server:
        out = cli(home, "eval", "run", "model-arith", "--agent", "openai/gpt-4o-mini", "--api-base",
                  server.base_url, "--concurrency", "1", "--max-usd", "0.0004", "--json", check=False)
        assert out.returncode == 1  # stopped by the budget
        first = json.loads(out.stdout)
        assert first["status"] == "budget"
        one_call = first["configs"][0]["cost_usd"] / first["cells_done"]
        assert 0 < first["cells_done"] < len(ITEMS)
        assert first["configs"][0]["cost_usd"] >= 0.0004 > first["configs"][0]["cost_usd"] - one_call
        done = cli_json(home, "eval", "resume", first["run_id"], "--max-usd", "1")
        assert len(server.requests) == len(ITEMS)  # no item asked twice
    assert done["status"] == "completed" and done["cells_done"] == len(ITEMS)
    assert done["configs"][0]["passed"] == 1  # only "add" has target 42
