"""The real Claude Code CLI, offline, with its telemetry pointed at the receiver.

claude talks to the scripted Anthropic server on loopback and exports OTLP/HTTP JSON
(chunked, no Content-Length) to a Receiver; its `api_request` events must become
usage rows equal to what the model server reported, and ingesting the transcript it
wrote under its HOME must add no second row for the same calls.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from sqlalchemy import select

from loopmeter.store import IngestCursor, Usage
from loopmeter.telemetry.receiver import Receiver
from tests.conftest import loopmeter_cmd
from tests.servers.anthropic_server import AnthropicServer, text_turn, write_turn

CLAUDE = shutil.which("claude")
MODEL = "claude-sonnet-4-5-20250929"
pytestmark = pytest.mark.skipif(CLAUDE is None, reason="claude CLI not installed (npm install -g @anthropic-ai/claude-code)")


def _claude_env(home: str, model_url: str, otlp_url: str, protocol: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"], "HOME": home, "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "sk-ant-test-not-a-key",
        "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_LOGS_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
        "OTEL_LOGS_EXPORT_INTERVAL": "200", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }


# http/json is what the issue names (chunked JSON); http/protobuf is what `collect --print-env` recommends.
@pytest.mark.parametrize("protocol", ["http/json", "http/protobuf"])
def test_claude_code_api_request_events_match_the_server_and_the_transcript_adds_no_duplicates(store, tmp_path,
                                                                                               protocol):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    turns = [
        write_turn("hello.txt", "hi\n", input_tokens=1200, output_tokens=80, cache_read_input_tokens=3000,
                   cache_creation_input_tokens=500),
        text_turn("wrote hello.txt", input_tokens=1350, output_tokens=25, cache_read_input_tokens=4200),
    ]
    receiver = Receiver(store, "127.0.0.1", 0)
    receiver.start()
    try:
        with AnthropicServer(turns) as model:
            res = subprocess.run(
                [CLAUDE, "-p", "create hello.txt containing hi", "--output-format", "json",
                 "--permission-mode", "acceptEdits", "--model", MODEL],
                env=_claude_env(str(home), model.url, receiver.url, protocol), cwd=work, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=180,
            )
            assert res.returncode == 0, res.stderr[-2000:]
            replies = list(model.replies)
        deadline = time.time() + 20  # claude flushes its log batch on exit; allow for a late export
        while receiver.stats.snapshot()["usage_accepted"] < len(replies) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        stats = receiver.stop()

    assert (work / "hello.txt").read_text() == "hi\n"
    assert len([r for r in replies if r.scripted]) == 2
    assert stats["bad_requests"] == 0 and stats["events"]["claude_code.api_request"] == len(replies)
    with store.session() as s:
        rows = {r[0].key: r[0] for r in s.exec(select(Usage))}
    assert set(rows) == {f"anthropic-req:{r.request_id}" for r in replies}
    for reply in replies:
        row = rows[f"anthropic-req:{reply.request_id}"]
        assert row.source == "otlp" and row.model == reply.model and row.request_id == reply.request_id
        assert row.input_tokens == reply.usage["input_tokens"]
        assert row.output_tokens == reply.usage["output_tokens"]
        assert row.cache_read_tokens == reply.usage["cache_read_input_tokens"]
        assert row.cache_write_tokens == reply.usage["cache_creation_input_tokens"]
        assert row.cost_source == "reported" and row.cost_usd is not None and row.cost_usd > 0
    result = json.loads(res.stdout)
    assert sum(r.cost_usd for r in rows.values()) == pytest.approx(result["total_cost_usd"])

    # The transcript claude wrote holds the same calls under the same request ids.
    projects = home / ".claude" / "projects"
    transcripts = list(projects.rglob("*.jsonl"))
    assert transcripts and any(r.request_id in transcripts[0].read_text() for r in replies)
    usage = subprocess.run(loopmeter_cmd("usage", "daily", "--json", "--timezone", "UTC", "--path", str(projects)),
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0, usage.stderr
    with store.session() as s:
        after = {r[0].key: r[0] for r in s.exec(select(Usage))}
        cursors = [c[0] for c in s.exec(select(IngestCursor))]
    assert any(c.path.endswith(".jsonl") and c.offset > 0 for c in cursors), "the transcript was not ingested"
    assert set(after) == set(rows) and all(r.source == "otlp" for r in after.values())
    totals = json.loads(usage.stdout)["totals"]
    assert totals["input_tokens"] == sum(r.usage["input_tokens"] for r in replies)
    assert totals["output_tokens"] == sum(r.usage["output_tokens"] for r in replies)
    assert totals["cache_read_tokens"] == sum(r.usage["cache_read_input_tokens"] for r in replies)
    assert totals["cache_write_tokens"] == sum(r.usage["cache_creation_input_tokens"] for r in replies)
