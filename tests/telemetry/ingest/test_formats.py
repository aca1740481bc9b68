"""Every pitfall in FORMATS.md, on hand-written logs with hand-computed totals."""

from __future__ import annotations

import json
import pwd
import sqlite3
from pathlib import Path

from loopmeter.telemetry.ingest import ingest
from loopmeter.telemetry.ingest.base import MAX_LINE_BYTES
from loopmeter.telemetry.pricing import default_price_table
from loopmeter.vocab import CostSource
from tests.telemetry.ingest.conftest import (
    CLAUDE_FILE,
    CODEX_FILE,
    GEMINI_JSON,
    GEMINI_JSONL,
    by_model,
    tokens,
    usage_json,
)

SONNET = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5-20251001"


def _rows(loopmeter_home: Path, where: str = "1=1") -> list[sqlite3.Row]:
    conn = sqlite3.connect(loopmeter_home / "loopmeter.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(f"SELECT * FROM usage WHERE {where} ORDER BY key").fetchall()
    finally:
        conn.close()


def test_claude_code_counts_each_response_once_with_sidechains_and_skips_the_rest(logs, agent_env):
    # req_A is written on 3 lines (one per content block): counted once. req_B is a
    # sidechain call: counted. A malformed line is counted and skipped, the <synthetic>
    # line and the unfinished last line (req_F) are not counted.
    report = usage_json(agent_env, "daily", "--timezone", "UTC", "--path", str(logs / CLAUDE_FILE))
    rows = by_model(report)
    # (input, output, cache write, cache read, reasoning)
    assert tokens(rows[("2026-11-09", SONNET)]) == (10 + 100, 300 + 50, 1000, 20000, 0)
    assert rows[("2026-11-09", SONNET)]["calls"] == 2
    assert tokens(rows[("2026-11-09", HAIKU)]) == (5, 120, 0, 3000, 0)
    assert tokens(rows[("2026-11-09", "claude-mystery-9")]) == (7, 8, 0, 0, 0)
    assert tokens(rows[("2026-11-10", SONNET)]) == (3, 40, 2000, 0, 0)
    assert "<synthetic>" not in {m for (_, m) in rows}
    t = report["totals"]
    assert (t["input_tokens"], t["output_tokens"], t["cache_write_tokens"], t["cache_read_tokens"]) == (125, 518, 3000, 23000)
    assert t["calls"] == 5
    assert t["unpriced_calls"] == 1
    assert report["ingest"]["malformed"] == [{"path": str(logs / CLAUDE_FILE), "lines": 1}]


def test_claude_code_cost_provenance_reported_calculated_unpriced(logs, agent_env, loopmeter_home):
    usage_json(agent_env, "--path", str(logs / CLAUDE_FILE))
    rows = {r["key"]: r for r in _rows(loopmeter_home)}
    assert set(rows) == {f"anthropic-req:req_{x}" for x in "ABCDE"}
    # old transcripts carry their own dollar figure
    assert rows["anthropic-req:req_C"]["cost_source"] == CostSource.REPORTED
    assert rows["anthropic-req:req_C"]["cost_usd"] == 0.0123
    # a model the price table does not know: unpriced, never $0
    assert rows["anthropic-req:req_D"]["cost_source"] == CostSource.UNPRICED
    assert rows["anthropic-req:req_D"]["cost_usd"] is None
    # 500 five-minute and 1500 one-hour cache writes are priced at their own rates
    table = default_price_table()
    entry = table.lookup(SONNET)
    assert entry is not None
    expected = (3 * entry["input_cost_per_token"] + 40 * entry["output_cost_per_token"]
                + 500 * entry["cache_creation_input_token_cost"]
                + 1500 * entry["cache_creation_input_token_cost_above_1hr"])
    e = rows["anthropic-req:req_E"]
    assert e["cost_source"] == CostSource.CALCULATED
    assert abs(e["cost_usd"] - expected) < 1e-12
    assert e["cache_write_1h_tokens"] == 1500
    assert e["price_table_sha256"] == table.sha256
    assert e["request_id"] == "req_E"
    assert e["session_id"] == "11111111-aaaa-bbbb-cccc-000000000001"
    assert e["project"] == "/home/dev/api"
    assert rows["anthropic-req:req_B"]["source"] == "claude-code-log"


def test_codex_cumulative_totals_become_per_call_deltas(logs, agent_env, loopmeter_home):
    # totals 3500/750/425/275, a null-info ping, the same totals again, a model switch,
    # totals 5000/1750/500/300, a malformed line, totals 6000/1750/600/350 (spaced JSON).
    report = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(logs / CODEX_FILE))
    rows = by_model(report)
    # input is stored non-cached (input - cached); cached is cache read; reasoning inside output
    assert tokens(rows[("2026-11-09", "gpt-5-codex")]) == (3500 - 750, 425, 0, 750, 275)
    assert tokens(rows[("2026-11-09", "gpt-5")]) == ((1500 - 1000) + (1000 - 0), 75 + 100, 0, 1000 + 0, 25 + 50)
    assert report["totals"]["calls"] == 3
    assert report["ingest"]["malformed"] == [{"path": str(logs / CODEX_FILE), "lines": 1}]
    keys = [r["key"] for r in _rows(loopmeter_home)]
    assert all(k.startswith("codex:0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b:") for k in keys)
    assert {r["project"] for r in _rows(loopmeter_home)} == {"/home/dev/svc"}
    assert {r["cost_source"] for r in _rows(loopmeter_home)} == {CostSource.CALCULATED}
    # the log's owner is the person the usage is attributed to
    owner = pwd.getpwuid((logs / CODEX_FILE).stat().st_uid).pw_name
    assert {r["user"] for r in _rows(loopmeter_home)} == {owner}


def test_gemini_json_and_jsonl_sessions(logs, agent_env, loopmeter_home):
    report = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(logs / "gemini"))
    rows = by_model(report)
    # input 1200 of which 200 cached; output 300 + 100 thoughts
    pro = rows[("2026-11-09", "gemini-2.5-pro")]
    assert tokens(pro) == ((1200 - 200) + 100, 300 + 100 + 10, 0, 200, 100)
    # a tool prompt of 20 counts as input; a message with null tokens adds nothing
    assert tokens(rows[("2026-11-09", "gemini-2.5-flash")]) == (500 + 20, 50, 0, 0, 0)
    keys = sorted(r["key"] for r in _rows(loopmeter_home))
    assert keys == ["gemini:a1b2c3d4-0000-4000-8000-000000000001:m2", "gemini:a1b2c3d4-0000-4000-8000-000000000001:m3",
                    "gemini:b2c3d4e5-0000-4000-8000-000000000002:n2"]


def test_gemini_session_file_rewritten_adds_only_new_messages(logs, agent_env):
    path = logs / GEMINI_JSON
    usage_json(agent_env, "--path", str(path))
    doc = json.loads(path.read_text())
    doc["messages"].append({"id": "m5", "timestamp": "2026-11-09T10:02:00.000Z", "type": "gemini", "content": "more",
                            "model": "gemini-2.5-flash",
                            "tokens": {"input": 40, "output": 4, "cached": 0, "thoughts": 0, "tool": 0, "total": 44}})
    path.write_text(json.dumps(doc, indent=2) + "\n")
    report = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(path))
    assert tokens(by_model(report)[("2026-11-09", "gemini-2.5-flash")]) == (520 + 40, 50 + 4, 0, 0, 0)
    assert report["totals"]["calls"] == 3
    assert (logs / GEMINI_JSONL).exists()


def test_huge_line_without_usage_is_streamed_past(tmp_path, store):
    # A user line longer than the reader keeps (tool output of tens of MB) is skipped
    # without being held in memory; the calls around it still count.
    path = tmp_path / "proj" / "s.jsonl"
    path.parent.mkdir()
    call = ('{"type":"assistant","sessionId":"s","timestamp":"2026-11-09T10:00:%02d.000Z","requestId":"r%d",'
            '"message":{"id":"m%d","model":"claude-sonnet-4-5-20250929","content":[],'
            '"usage":{"input_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}}}\n')
    with path.open("w") as fh:
        fh.write(call % (1, 1, 1))
        fh.write('{"type":"user","message":{"content":"' + "x" * (MAX_LINE_BYTES + (3 << 20)) + '"}}\n')
        fh.write(call % (2, 2, 2))
        fh.write('{"type":"user","message":{"content":"' + "y" * (MAX_LINE_BYTES + (5 << 20)) + ' \\"usage\\": "}, "usage": {}}\n')
        fh.write(call % (3, 3, 3))
    report = ingest(store, paths=[path])
    assert report.rows_added == 3
    # an oversized line that could have held usage is reported, not silently dropped
    assert report.malformed == {str(path): 1}
