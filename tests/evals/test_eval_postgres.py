"""The eval runner and reports on PostgreSQL: the same results and summaries as on SQLite."""

from __future__ import annotations

from loopmeter.evals.report import list_evals, summarize_run
from loopmeter.evals.runner import EvalOptions, resume_eval, start_eval
from tests.servers.openai_server import OpenAIServer, text


def test_model_eval_on_postgres_stores_cells_and_summarises(pg_store) -> None:
    with OpenAIServer(default=text("12", prompt_tokens=30, completion_tokens=2)) as server:
        outcome = start_eval("model-arith", ["openai/gpt-4o-mini", "openai/unpriced-local"],
                             EvalOptions(concurrency=2, api_base=server.base_url), store=pg_store)
        again = resume_eval(outcome.run_id, store=pg_store)
    assert outcome.status == "completed" and outcome.ran == 20
    assert again.ran == 0 and again.already == 20
    summary = summarize_run(pg_store, outcome.run_id)
    priced, local = summary["configs"]
    assert priced["pass_rate"] == local["pass_rate"] == 0.2  # "pct" and "avg" are 12
    assert priced["cost_usd"] > 0 and local["cost_usd"] is None
    assert summary["comparisons"][0]["verdict"] == "no detectable difference"
    listed = list_evals(pg_store)
    assert [(r["run_id"], r["cells_done"], r["status"]) for r in listed] == [(outcome.run_id, 20, "completed")]
