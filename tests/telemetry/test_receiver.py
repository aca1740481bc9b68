"""The OTLP/HTTP receiver over real HTTP on 127.0.0.1, writing to a real store."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from sqlalchemy import select

from loopmeter.records import UsageRow
from loopmeter.store import Span, Usage
from loopmeter.telemetry.pricing import load_price_table
from loopmeter.telemetry.receiver import Receiver
from tests.conftest import FIXTURES
from tests.fixtures.otlp import payloads as p

PRICES = load_price_table(base=FIXTURES / "prices" / "litellm_subset.json")


def post(port: int, path: str, body: bytes, *, content_type: str = "application/x-protobuf",
         chunked: bool = False, encoding: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    if chunked:  # like Claude Code's exporter: Transfer-Encoding: chunked, no Content-Length
        pieces = [body[i:i + 97] for i in range(0, len(body), 97)]
        conn.request("POST", path, body=iter(pieces), headers=headers, encode_chunked=True)
    else:
        conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def usage_rows(store) -> dict[str, Usage]:
    with store.session() as s:
        return {r[0].key: r[0] for r in s.exec(select(Usage))}


def span_rows(store) -> list[Span]:
    with store.session() as s:
        return [r[0] for r in s.exec(select(Span))]


@pytest.fixture
def receiver(store):
    rec = Receiver(store, "127.0.0.1", 0, prices=PRICES)
    rec.start()
    yield rec
    rec.stop()


def test_claude_code_protobuf_events_become_usage_rows(store, receiver):
    req = p.logs_request([
        p.claude_api_request("req_A", input_tokens=4, output_tokens=310, cache_read_tokens=52000,
                             cache_creation_tokens=1800, cost_usd=0.0312, user_email="dev@example.com"),
        p.claude_api_request("req_B", input_tokens=100, output_tokens=20, cost_usd=0.0006),
        p.claude_other_event("tool_result"),
    ])
    status, headers, body = post(receiver.port, "/v1/logs", p.otlp_proto(req))
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    assert not ExportLogsServiceResponse.FromString(body).HasField("partial_success")
    stats = receiver.stop()

    rows = usage_rows(store)
    assert set(rows) == {"anthropic-req:req_A", "anthropic-req:req_B"}
    a = rows["anthropic-req:req_A"]
    assert (a.input_tokens, a.output_tokens, a.cache_read_tokens, a.cache_write_tokens) == (4, 310, 52000, 1800)
    assert a.cost_usd == pytest.approx(0.0312) and a.cost_source == "reported"
    assert a.source == "otlp" and a.agent == "claude-code" and a.provider == "anthropic"
    assert a.model == "claude-sonnet-4-5-20250929" and a.request_id == "req_A"
    assert a.session_id == "sess-1" and a.user == "dev@example.com" and a.latency_ms == 40
    assert stats["log_records"] == 3 and stats["usage_new"] == 2
    assert stats["events"]["claude_code.tool_result"] == 1


def test_json_gzip_chunked_gives_the_same_rows_as_protobuf(store, receiver):
    req = p.logs_request([p.claude_api_request("req_J", input_tokens=7, output_tokens=3, cost_usd=0.000066)])
    status, headers, body = post(receiver.port, "/v1/logs", p.gz(p.otlp_json(req)), content_type="application/json",
                                 chunked=True, encoding="gzip")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    receiver.stop()
    row = usage_rows(store)["anthropic-req:req_J"]
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (7, 3, pytest.approx(0.000066))


def test_the_real_claude_code_2_1_197_payload_is_read(store, receiver):
    """The body Claude Code 2.1.197 sent (OTLP/JSON, intValue as JSON numbers), captured on this machine."""
    body = (FIXTURES / "otlp" / "claude_code_2.1.197_logs.json").read_bytes()
    assert post(receiver.port, "/v1/logs", body, content_type="application/json", chunked=True)[0] == 200
    metrics = (FIXTURES / "otlp" / "claude_code_2.1.197_metrics.json").read_bytes()
    assert post(receiver.port, "/v1/metrics", metrics, content_type="application/json", chunked=True)[0] == 200
    stats = receiver.stop()
    rows = usage_rows(store)
    assert set(rows) == {"anthropic-req:req_000174c3bdf048434ceab38a", "anthropic-req:req_0002e1b02ef2483e448eab09"}
    assert all((r.input_tokens, r.output_tokens, r.cost_source) == (100, 20, "reported") for r in rows.values())
    assert stats["metric_points"] == 10 and stats["events"]["claude_code.token.usage"] == 4


def test_a_call_already_ingested_from_the_transcript_is_not_stored_twice(store, receiver):
    store.add_usage([UsageRow(key="anthropic-req:req_T", source="claude-code-log", ts=datetime.now(UTC),
                              model="claude-sonnet-4-5-20250929", input_tokens=100, output_tokens=20,
                              request_id="req_T")])
    req = p.logs_request([p.claude_api_request("req_T"), p.claude_api_request("req_U")])
    assert post(receiver.port, "/v1/logs", p.otlp_proto(req))[0] == 200
    assert post(receiver.port, "/v1/logs", p.otlp_proto(req))[0] == 200  # an exporter's retry
    stats = receiver.stop()
    rows = usage_rows(store)
    assert set(rows) == {"anthropic-req:req_T", "anthropic-req:req_U"}
    assert rows["anthropic-req:req_T"].source == "claude-code-log"
    assert stats["usage_accepted"] == 4 and stats["usage_new"] == 1 and stats["usage_duplicate"] == 3


def test_codex_completed_events_become_rows_with_input_split_from_cached(store, receiver):
    req = p.logs_request([p.codex_api_request(), p.codex_completed(input_tokens=3500, cached=750,
                                                                    output_tokens=425, reasoning=275)],
                         service="codex-cli", scope="codex_otel")
    assert post(receiver.port, "/v1/logs", p.otlp_json(req), content_type="application/json")[0] == 200
    receiver.stop()
    (row,) = usage_rows(store).values()
    assert row.key.startswith("codex-otlp:conv-1:") and row.agent == "codex" and row.provider == "openai"
    assert (row.input_tokens, row.cache_read_tokens, row.output_tokens, row.reasoning_tokens) == (2750, 750, 425, 275)
    expected = PRICES.cost("gpt-5-codex", input_tokens=2750, cache_read_tokens=750, output_tokens=425,
                           provider="openai")
    if expected is None:
        assert row.cost_usd is None and row.cost_source == "unpriced"
    else:
        assert row.cost_usd == pytest.approx(expected) and row.cost_source == "calculated"


def test_gemini_api_response_becomes_a_row(store, receiver):
    req = p.logs_request([p.gemini_api_response(input_tokens=33779, output_tokens=390, cached=9513,
                                                thoughts=2111, tool=12)],
                         service="gemini-cli", scope="gemini-cli")
    assert post(receiver.port, "/v1/logs", p.otlp_proto(req))[0] == 200
    receiver.stop()
    (row,) = usage_rows(store).values()
    assert row.key.startswith("gemini-otlp:gsess-1:gp-1:") and row.agent == "gemini"
    assert row.input_tokens == 33779 - 9513 + 12 and row.cache_read_tokens == 9513
    assert row.output_tokens == 390 + 2111 and row.reasoning_tokens == 2111
    assert row.cost_source in ("calculated", "unpriced") and (row.cost_usd is None) == (row.cost_source == "unpriced")


@pytest.mark.parametrize("encoding", ["proto", "json-hex", "json-base64"])
def test_traces_become_span_rows(store, receiver, encoding):
    trace_id = uuid.uuid4().bytes
    root = p.make_span("invoke_agent codex", trace_id=trace_id, kind=1)
    child = p.make_span("chat gpt-5-codex", trace_id=trace_id, parent=root.span_id, error=True,
                        attrs={"gen_ai.usage.input_tokens": 12, "loopmeter.run.id": "01RUN"})
    req = p.traces_request([root, child])
    if encoding == "proto":
        body, ctype = p.otlp_proto(req), "application/x-protobuf"
    else:
        body, ctype = p.otlp_json(req, ids=encoding.split("-")[1]), "application/json"
    assert post(receiver.port, "/v1/traces", body, content_type=ctype)[0] == 200
    receiver.stop()
    spans = {s.name: s for s in span_rows(store)}
    assert set(spans) == {"invoke_agent codex", "chat gpt-5-codex"}
    c = spans["chat gpt-5-codex"]
    assert c.trace_id == trace_id.hex() and c.span_id == child.span_id.hex()
    assert c.parent_span_id == root.span_id.hex() and spans["invoke_agent codex"].parent_span_id is None
    assert (c.kind, c.status, c.service, c.run_id) == ("client", "error", "codex-cli", "01RUN")
    assert json.loads(c.attributes)["gen_ai.usage.input_tokens"] == 12
    assert c.end_ns - c.start_ns == 5_000_000


def test_metrics_are_accepted_and_counted_but_make_no_usage_rows(store, receiver):
    req = p.token_usage_metrics({"input": 100, "output": 20, "cacheRead": 0, "cacheCreation": 0})
    assert post(receiver.port, "/v1/metrics", p.otlp_proto(req))[0] == 200
    assert post(receiver.port, "/v1/metrics", p.otlp_json(req), content_type="application/json")[0] == 200
    stats = receiver.stop()
    assert stats["metric_points"] == 10 and stats["events"]["claude_code.token.usage"] == 8
    assert usage_rows(store) == {}


GARBAGE = [
    ("/v1/logs", b"\xff\xfe not protobuf at all \x00\x01", "application/x-protobuf", None, "protobuf"),
    ("/v1/logs", b"{not json", "application/json", None, "not JSON"),
    ("/v1/logs", b"[1, 2, 3]", "application/json", None, "JSON object"),
    ("/v1/logs", b'{"resourceLogs": 5}', "application/json", None, "resourceLogs: expected a list"),
    ("/v1/logs", b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": "a", "value": '
                 b'{"intValue": "many"}}]}]}]}]}', "application/json", None, "intValue"),
    ("/v1/traces", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}]}',
     "application/json", None, "traceId"),
    ("/v1/logs", b"\x1f\x8b\x08 broken gzip", "application/x-protobuf", "gzip", "gzip"),
]


@pytest.mark.parametrize(("path", "body", "ctype", "encoding", "reason"), GARBAGE)
def test_a_bad_payload_gets_400_with_the_reason_and_the_receiver_keeps_running(store, receiver, path, body, ctype,
                                                                              encoding, reason):
    status, headers, data = post(receiver.port, path, body, content_type=ctype, encoding=encoding)
    assert status == 400
    if ctype == "application/json":
        message = json.loads(data)["message"]
    else:
        message = Status.FromString(data).message
    assert reason in message
    ok = p.logs_request([p.claude_api_request("req_after_garbage")])
    assert post(receiver.port, "/v1/logs", p.otlp_proto(ok))[0] == 200
    stats = receiver.stop()
    assert "anthropic-req:req_after_garbage" in usage_rows(store) and stats["bad_requests"] == 1


def test_unknown_paths_and_media_types_are_refused(receiver):
    assert post(receiver.port, "/v1/profiles", b"{}", content_type="application/json")[0] == 404
    assert post(receiver.port, "/v1/logs", b"x", content_type="text/plain")[0] == 415
    assert post(receiver.port, "/v1/logs", b"x", encoding="br")[0] == 415
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    conn.request("GET", "/v1/logs")
    assert conn.getresponse().status == 405


def test_one_unusable_record_is_rejected_and_the_rest_kept(store, receiver):
    bad = p.claude_api_request("req_bad")
    for kv in bad.attributes:
        if kv.key == "input_tokens":
            kv.value.Clear()
            kv.value.string_value = "lots"
    req = p.logs_request([bad, p.claude_api_request("req_good")])
    status, _, body = post(receiver.port, "/v1/logs", p.otlp_proto(req))
    assert status == 200
    partial = ExportLogsServiceResponse.FromString(body).partial_success
    assert partial.rejected_log_records == 1 and "input_tokens" in partial.error_message
    status, _, body = post(receiver.port, "/v1/logs", p.otlp_json(req), content_type="application/json")
    assert json.loads(body)["partialSuccess"]["rejectedLogRecords"] == "1"
    receiver.stop()
    assert set(usage_rows(store)) == {"anthropic-req:req_good"}


def test_overload_answers_503_with_retry_after_and_loses_nothing(store, sqlite_url):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, queue_size=2)
    receiver.start()
    lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database: the writer thread waits
    answers: dict[str, tuple[int, dict[str, str]]] = {}
    try:
        for i in range(8):
            req = p.logs_request([p.claude_api_request(f"req_load_{i}")])
            status, headers, _ = post(receiver.port, "/v1/logs", p.otlp_proto(req))
            answers[f"req_load_{i}"] = (status, headers)
            time.sleep(0.05)
    finally:
        lock.execute("COMMIT")
        lock.close()
    refused = [rid for rid, (status, _) in answers.items() if status == 503]
    accepted = [rid for rid, (status, _) in answers.items() if status == 200]
    assert refused and accepted and len(refused) + len(accepted) == 8
    assert all(int(answers[rid][1]["Retry-After"]) > 0 for rid in refused)
    for rid in refused:  # what an exporter does after Retry-After
        for _ in range(50):
            status = post(receiver.port, "/v1/logs", p.otlp_proto(p.logs_request([p.claude_api_request(rid)])))[0]
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
    stats = receiver.stop()
    assert set(usage_rows(store)) == {f"anthropic-req:{rid}" for rid in answers}
    assert stats["overloaded"] >= len(refused)


def test_stop_flushes_everything_accepted(store):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, batch_rows=50)
    receiver.start()
    accepted: list[str] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        for i in range(25):
            records = [p.claude_api_request(f"req_{worker}_{i}_{j}") for j in range(10)]
            if post(receiver.port, "/v1/logs", p.otlp_proto(p.logs_request(records)))[0] == 200:
                with lock:
                    accepted.extend(f"anthropic-req:req_{worker}_{i}_{j}" for j in range(10))

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = receiver.stop()  # straight after the last 200: whatever is still queued must land
    assert len(accepted) == 1000 and set(usage_rows(store)) == set(accepted)
    assert stats["usage_new"] == 1000


def test_requests_after_stop_are_not_accepted(store):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES)
    port = receiver.start()
    receiver.stop()
    with pytest.raises(OSError):
        post(port, "/v1/logs", p.otlp_proto(p.logs_request([p.claude_api_request("late")])))
    assert usage_rows(store) == {}


def test_receiver_writes_to_postgres(pg_store):
    receiver = Receiver(pg_store, "127.0.0.1", 0, prices=PRICES)
    receiver.start()
    req = p.logs_request([p.claude_api_request("req_pg1"), p.claude_api_request("req_pg2")])
    assert post(receiver.port, "/v1/logs", p.otlp_json(req), content_type="application/json", chunked=True)[0] == 200
    assert post(receiver.port, "/v1/traces", p.otlp_proto(p.traces_request([p.make_span("s")])))[0] == 200
    stats = receiver.stop()
    assert set(usage_rows(pg_store)) == {"anthropic-req:req_pg1", "anthropic-req:req_pg2"}
    assert len(span_rows(pg_store)) == 1 and stats["spans_stored"] == 1


def test_bodies_over_the_limit_get_413_even_when_gzipped(store):
    import gzip

    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, max_body=1_000_000)
    receiver.start()
    try:
        bomb = gzip.compress(b"\0" * 3_000_000)  # small on the wire, 3 MB inflated
        assert len(bomb) < 1_000_000
        assert post(receiver.port, "/v1/logs", bomb, encoding="gzip")[0] == 413
        assert post(receiver.port, "/v1/logs", b"\0" * 1_500_000)[0] == 413
        assert post(receiver.port, "/v1/logs", b"\0" * 1_500_000, chunked=True)[0] == 413
        ok = p.logs_request([p.claude_api_request("req_small")])
        assert post(receiver.port, "/v1/logs", p.otlp_proto(ok))[0] == 200
    finally:
        receiver.stop()
    assert set(usage_rows(store)) == {"anthropic-req:req_small"}


def test_one_keep_alive_connection_survives_a_bad_request(store, receiver):
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    statuses = []
    for i, body in enumerate([p.otlp_proto(p.logs_request([p.claude_api_request("req_k1")])), b"{oops",
                              p.otlp_json(p.logs_request([p.claude_api_request("req_k2")]))]):
        ctype = "application/x-protobuf" if i == 0 else "application/json"
        conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    conn.close()
    assert statuses == [200, 400, 200]
    receiver.stop()
    assert set(usage_rows(store)) == {"anthropic-req:req_k1", "anthropic-req:req_k2"}


def test_a_summary_line_is_logged_each_interval(store):
    lines: list[str] = []
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, log=lines.append, summary_every_s=0.3)
    receiver.start()
    try:
        req = p.logs_request([p.claude_api_request("req_s1"), p.claude_api_request("req_s2")])
        assert post(receiver.port, "/v1/logs", p.otlp_proto(req))[0] == 200
        post(receiver.port, "/v1/logs", b"junk")
        deadline = time.time() + 10
        while not any("2 new usage rows" in line for line in lines) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        receiver.stop()
    line = next(line for line in lines if "2 new usage rows" in line)
    assert line.startswith("collect ") and "1 requests, 2 log records" in line and "1 bad requests" in line


def test_what_the_store_will_not_take_by_the_stop_deadline_is_saved_to_a_file(store, tmp_path):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, spill_dir=tmp_path, log=lambda line: None)
    receiver.start()
    with store.engine.begin() as conn:  # the store stops accepting rows: its table is gone
        conn.exec_driver_sql("ALTER TABLE usage RENAME TO usage_elsewhere")
    try:
        req = p.logs_request([p.claude_api_request("req_spill")])
        assert post(receiver.port, "/v1/logs", p.otlp_proto(req))[0] == 200
        stats = receiver.stop(timeout=1.0)
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE usage_elsewhere RENAME TO usage")
    assert stats["write_errors"] >= 1 and receiver.unsaved is not None
    (line,) = receiver.unsaved.read_text().splitlines()
    assert json.loads(line)["usage"]["key"] == "anthropic-req:req_spill"


def test_rows_waiting_for_the_store_are_bounded_too(store):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, max_pending_rows=15, log=lambda line: None)
    receiver.start()

    def ten(tag: str) -> bytes:
        return p.otlp_proto(p.logs_request([p.claude_api_request(f"req_{tag}_{i}") for i in range(10)]))

    with store.engine.begin() as conn:  # the writer cannot insert: rows wait in memory
        conn.exec_driver_sql("ALTER TABLE usage RENAME TO usage_elsewhere")
    try:
        assert post(receiver.port, "/v1/logs", ten("a"))[0] == 200
        status, headers, _ = post(receiver.port, "/v1/logs", ten("b"))
        assert status == 503 and headers["Retry-After"]
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE usage_elsewhere RENAME TO usage")
    for _ in range(100):  # the writer's retry lands the first ten, which frees room
        status = post(receiver.port, "/v1/logs", ten("b"))[0]
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200
    receiver.stop()
    assert len(usage_rows(store)) == 20


def test_ipv6_loopback_works_as_a_context_manager(store):
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        receiver = Receiver(store, "::1", 0, prices=PRICES)
        receiver.start()
    except Exception as exc:  # an IPv6-less container cannot bind ::1
        pytest.skip(f"cannot bind ::1: {exc}")
    receiver.stop()
    with Receiver(store, "::1", 0, prices=PRICES) as rec:
        assert rec.url == f"http://[::1]:{rec.port}"
        conn = http.client.HTTPConnection("::1", rec.port, timeout=10)
        conn.request("POST", "/v1/logs", body=p.otlp_proto(p.logs_request([p.claude_api_request("req_v6")])),
                     headers={"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        conn.close()
    assert set(usage_rows(store)) == {"anthropic-req:req_v6"}
