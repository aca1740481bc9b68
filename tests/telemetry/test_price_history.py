"""Prices that outlive LiteLLM's table: loopmeter's dated price history, below a user's
prices.json and above LiteLLM's table, applied by the date of each call.

The ingest tests read real Claude Code transcripts into a real SQLite store with the
price tables a fresh install has: LiteLLM's bundled table (which no longer lists Claude
Opus 4 and 4.1) and the shipped history.
"""

from __future__ import annotations

import importlib.resources
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from loopmeter.errors import ConfigError
from loopmeter.telemetry.ingest import ingest
from loopmeter.telemetry.pricing import HISTORY_FILE, load_price_table, parse_history
from tests.conftest import FIXTURES, loopmeter_cmd

SUBSET = FIXTURES / "prices" / "litellm_subset.json"
OPUS_41 = "claude-opus-4-1-20250805"
OPUS_4 = "claude-opus-4-20250514"
M = 1e-6  # a price per million tokens, per token


def call(req: str, ts: str, model: str, inp: int, out: int, cache_read: int, cache_write: int,
         cache_write_1h: int) -> str:
    line = {"type": "assistant", "sessionId": "s1", "cwd": "/home/dev/api", "timestamp": ts, "requestId": req,
            "message": {"id": f"msg_{req}", "role": "assistant", "model": model, "content": [],
                        "usage": {"input_tokens": inp, "cache_creation_input_tokens": cache_write,
                                  "cache_read_input_tokens": cache_read, "output_tokens": out,
                                  "cache_creation": {"ephemeral_5m_input_tokens": cache_write - cache_write_1h,
                                                     "ephemeral_1h_input_tokens": cache_write_1h}}}}
    return json.dumps(line) + "\n"


# Opus 4.1 (released 2025-08-05): one call in September 2025, one dated before its release;
# Opus 4 (released 2025-05-22): one call in June 2025.
LOG = (call("req_sept", "2025-09-15T10:00:00.000Z", OPUS_41, 1000, 2000, 10000, 4000, 1000)
       + call("req_early", "2025-07-20T10:00:00.000Z", OPUS_41, 1000, 2000, 10000, 4000, 1000)
       + call("req_june", "2025-06-02T10:00:00.000Z", OPUS_4, 500, 100, 0, 0, 0))
# $15/M input, $75/M output, $1.50/M cache read, $18.75/M 5-minute and $30/M 1-hour cache write
SEPT_COST = 1000 * 15 * M + 2000 * 75 * M + 10000 * 1.5 * M + 3000 * 18.75 * M + 1000 * 30 * M
JUNE_COST = 500 * 15 * M + 100 * 75 * M


def ingest_log(tmp_path: Path, sqlite_url: str, store) -> dict[str, tuple]:
    """Ingest LOG for real; {request id: (cost, cost source, price table sha256)}."""
    path = tmp_path / "logs" / "projects" / "-home-dev-api" / "s1.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(LOG)
    ingest(store, paths=[path], workers=1)
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT request_id, cost_usd, cost_source, price_table_sha256 FROM usage")}
    finally:
        conn.close()


def test_litellms_table_no_longer_prices_the_retired_opus_models():
    # the premise of this file: without the history, a fresh install leaves these calls unpriced
    litellm_only = load_price_table(history_file=None)
    assert litellm_only.model_count > 1000
    assert litellm_only.cost(OPUS_41, input_tokens=1, at="2025-09-15") is None
    assert litellm_only.cost(OPUS_4, input_tokens=1, at="2025-06-02") is None


def test_a_retired_models_call_is_priced_from_the_history_by_its_date(tmp_path, store, sqlite_url):
    rows = ingest_log(tmp_path, sqlite_url, store)
    cost, source, sha = rows["req_sept"]
    assert cost == pytest.approx(SEPT_COST, rel=1e-12)
    assert source == "calculated"
    assert sha == load_price_table().sha256  # the hash covers the history too
    assert sha != load_price_table(history_file=None).sha256
    cost, source, _ = rows["req_june"]
    assert (cost, source) == (pytest.approx(JUNE_COST, rel=1e-12), "calculated")


def test_a_call_before_the_models_first_price_is_unpriced_not_zero(tmp_path, store, sqlite_url):
    rows = ingest_log(tmp_path, sqlite_url, store)
    assert rows["req_early"] == (None, "unpriced", None)


def test_a_users_price_file_wins_over_the_history_whatever_the_date(tmp_path, store, sqlite_url,
                                                                     loopmeter_home):
    (loopmeter_home / "prices.json").write_text(json.dumps({
        OPUS_41: {"input_cost_per_token": 10 * M, "output_cost_per_token": 50 * M,
                  "cache_read_input_token_cost": 1 * M, "cache_creation_input_token_cost": 12.5 * M,
                  "cache_creation_input_token_cost_above_1hr": 20 * M},
        # only one field: the others are the history's for the call's date
        OPUS_4: {"output_cost_per_token": 60 * M}}))
    rows = ingest_log(tmp_path, sqlite_url, store)
    user_cost = 1000 * 10 * M + 2000 * 50 * M + 10000 * 1 * M + 3000 * 12.5 * M + 1000 * 20 * M
    assert rows["req_sept"][:2] == (pytest.approx(user_cost, rel=1e-12), "calculated")
    assert rows["req_early"][:2] == (pytest.approx(user_cost, rel=1e-12), "calculated")
    assert rows["req_june"][:2] == (pytest.approx(500 * 15 * M + 100 * 60 * M, rel=1e-12), "calculated")


def test_usage_reports_the_retired_models_cost(tmp_path, loopmeter_home):
    import os

    logs = tmp_path / "logs" / "projects" / "-home-dev-api"
    logs.mkdir(parents=True)
    (logs / "s1.jsonl").write_text(LOG)
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_CONFIG_DIR", "TZ")}
    env.update(LOOPMETER_HOME=str(loopmeter_home), HOME=str(tmp_path), NO_COLOR="1")
    proc = subprocess.run(loopmeter_cmd("usage", "monthly", "--json", "-z", "UTC", "--path", str(logs)),
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    months = {r["month"]: r for r in json.loads(proc.stdout)["monthly"]}
    assert months["2025-09"]["cost_usd"] == pytest.approx(SEPT_COST, abs=1e-4)
    assert months["2025-09"]["unpriced_calls"] == 0
    assert months["2025-07"]["cost_usd"] is None and months["2025-07"]["unpriced_calls"] == 1
    assert months["2025-06"]["cost_usd"] == pytest.approx(JUNE_COST, abs=1e-4)


def history(tmp_path: Path, models: dict) -> Path:
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"models": models}))
    return path


def period(start: str, end: str | None, inp: float, out: float) -> dict:
    return {"valid_from": start, "valid_to": end, "input_cost_per_token": inp, "output_cost_per_token": out,
            "source": "https://example.com/pricing"}


def test_the_history_wins_over_litellm_for_its_dates_only(tmp_path):
    # a model still in LiteLLM's table whose price changed: the old price for the old dates
    sonnet = "claude-sonnet-4-5-20250929"
    table = load_price_table(base=SUBSET, history_file=history(tmp_path, {
        sonnet: {"prices": [period("2025-01-01", "2025-06-30", 6 * M, 30 * M),
                            period("2025-07-01", "2025-07-31", 4 * M, 20 * M)]}}))
    assert table.cost(sonnet, input_tokens=1_000_000, at="2025-06-30") == pytest.approx(6.0)
    assert table.cost(sonnet, input_tokens=1_000_000, at="2025-07-01") == pytest.approx(4.0)
    assert table.cost_of(sonnet, "anthropic", 1_000_000, 0, 0, 0, 0, "2025-07-31 23:59:59.999999") \
        == pytest.approx(4.0)
    # outside the history: LiteLLM's current price ($3/M in the subset)
    assert table.cost(sonnet, input_tokens=1_000_000, at="2025-08-01") == pytest.approx(3.0)
    assert table.cost(sonnet, input_tokens=1_000_000, at="2024-12-31") == pytest.approx(3.0)
    # provider-prefixed names and datetimes find the same period
    from datetime import datetime, timedelta, timezone

    early_july_in_paris = datetime(2025, 7, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 2025-06-30 in UTC
    assert table.cost(f"anthropic/{sonnet}", input_tokens=1_000_000, at=early_july_in_paris) == pytest.approx(6.0)
    assert table.lookup(sonnet, at="2025-03-01")["input_cost_per_token"] == 6 * M


def test_aliases_share_their_models_history(tmp_path):
    table = load_price_table(base=SUBSET, history_file=history(tmp_path, {
        "my-model-20250101": {"aliases": ["my-model"], "prices": [period("2025-01-01", None, 2 * M, 8 * M)]}}))
    assert table.cost("my-model", input_tokens=1_000_000, at="2030-01-01") == pytest.approx(2.0)
    assert table.cost("MY-MODEL-20250101", output_tokens=1_000_000, at="2025-01-01") == pytest.approx(8.0)
    assert table.cost("my-model", input_tokens=1, at="2024-12-31") is None


@pytest.mark.parametrize(("models", "message"), [
    ({"m": {"prices": [period("2025-01-01", "2025-03-01", 1, 1), period("2025-02-01", None, 1, 1)]}}, "overlap"),
    ({"m": {"prices": [period("2025-01-01", None, 1, 1), period("2025-02-01", None, 1, 1)]}}, "overlap"),
    ({"m": {"prices": [period("2025-13-01", None, 1, 1)]}}, "not a date"),
    ({"m": {"prices": [period("2025-03-01", "2025-02-01", 1, 1)]}}, "before valid_from"),
    ({"m": {"prices": [{**period("2025-01-01", None, 1, 1), "source": ""}]}}, "source"),
    ({"m": {"prices": [{**period("2025-01-01", None, 1, 1), "input_cost_per_token": -1}]}}, "not a price"),
    ({"m": {"prices": [{"valid_from": "2025-01-01", "source": "x", "output_cost_per_token": 1}]}}, "input_cost"),
    ({"m": {"prices": []}}, "non-empty"),
    ({"m": {"aliases": ["n"], "prices": [period("2025-01-01", None, 1, 1)]},
      "n": {"prices": [period("2025-01-01", None, 1, 1)]}}, "twice"),
])
def test_a_bad_history_is_refused_with_the_reason(models, message):
    with pytest.raises(ConfigError, match=message):
        parse_history(json.dumps({"models": models}).encode(), "h.json")


def test_the_shipped_history_is_package_data_with_the_public_prices():
    shipped = importlib.resources.files("loopmeter.telemetry").joinpath("price_history.json")
    assert shipped.is_file() and Path(str(shipped)) == HISTORY_FILE
    parsed = parse_history(HISTORY_FILE.read_bytes(), str(HISTORY_FILE))
    want = {"input_cost_per_token": 15 * M, "output_cost_per_token": 75 * M,
            "cache_read_input_token_cost": 1.5 * M, "cache_creation_input_token_cost": 18.75 * M,
            "cache_creation_input_token_cost_above_1hr": 30 * M}
    for model, released in ((OPUS_41, "2025-08-05"), (OPUS_4, "2025-05-22")):
        [p] = parsed[model]
        assert (p.valid_from, p.valid_to) == (released, None)
        assert {k: pytest.approx(v, rel=1e-12) for k, v in want.items()} == dict(p.prices)
        assert "anthropic.com" in p.source or "claude.com" in p.source
    assert parsed["claude-opus-4-1"] is parsed[OPUS_41] and parsed["claude-opus-4-0"] is parsed[OPUS_4]


def _provider(model: str) -> str:
    return "anthropic" if model.startswith("claude") else "gemini" if model.startswith("gemini") else "openai"


def test_every_model_in_the_history_is_priced_by_it_where_litellms_table_leaves_it_unpriced():
    litellm_only, fresh_install = load_price_table(history_file=None), load_price_table()
    history = parse_history(HISTORY_FILE.read_bytes(), str(HISTORY_FILE))
    assert len({id(periods) for periods in history.values()}) >= 13  # the Claude 3 to 4.1, OpenAI and Gemini models
    for model, periods in history.items():
        for p in periods:
            day, provider = p.valid_from, _provider(model)
            assert litellm_only.cost(model, input_tokens=1000, provider=provider, at=day) is None, model
            rates = dict(p.prices)
            expected = 1000 * rates["input_cost_per_token"] + 200 * rates["output_cost_per_token"]
            got = fresh_install.cost(model, input_tokens=1000, output_tokens=200, provider=provider, at=day)
            assert got == pytest.approx(expected, rel=1e-9), model
            assert "https://" in p.source, model


def test_claude_sonnet_4_prompts_over_200k_tokens_cost_the_long_context_rates():
    table = load_price_table()
    # $3/M input and $15/M output up to 200k prompt tokens; above, the whole call at $6 and $22.50
    assert table.cost("claude-sonnet-4-20250514", input_tokens=100_000, output_tokens=1000,
                      at="2025-09-01") == pytest.approx(100_000 * 3 * M + 1000 * 15 * M)
    assert table.cost("claude-sonnet-4-0", input_tokens=300_000, output_tokens=1000,
                      at="2025-09-01") == pytest.approx(300_000 * 6 * M + 1000 * 22.5 * M)
    # Claude Haiku 3.5 before the first price the history is sure of: unpriced, not a guess
    assert table.cost("claude-3-5-haiku-20241022", input_tokens=1000, at="2024-11-20") is None
