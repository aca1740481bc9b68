"""Decoding OTLP payloads: both encodings give the same records; the JSON quirks are read; errors name the field."""

from __future__ import annotations

import base64
import json

import pytest

from loopmeter.telemetry.ingest.otlp import PayloadError, decode
from loopmeter.telemetry.pricing import load_price_table
from tests.conftest import FIXTURES
from tests.fixtures.otlp import payloads as p

PRICES = load_price_table(base=FIXTURES / "prices" / "litellm_subset.json")
TRACE = bytes(range(16))
SPAN = bytes(range(100, 108))


def _one_span_json(trace_id: str, span_id: str, **extra) -> bytes:
    span = {"traceId": trace_id, "spanId": span_id, "name": "chat x", "startTimeUnixNano": "1000",
            "endTimeUnixNano": 3000, **extra}
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{"spans": [span]}]}]}).encode()


def test_protobuf_and_json_encodings_decode_to_the_same_usage_rows():
    req = p.logs_request([p.claude_api_request("req_1", ts_ns=1_790_000_000_123_000_000),
                          p.codex_completed(ts_ns=1_790_000_001_000_000_000),
                          p.gemini_api_response(ts_ns=1_790_000_002_000_000_000)])
    a = decode("logs", p.otlp_proto(req), "application/x-protobuf", PRICES)
    b = decode("logs", p.otlp_json(req), "application/json; charset=utf-8", PRICES)
    assert [r.as_dict() for r in a.usage] == [r.as_dict() for r in b.usage]
    assert [r.key.split(":")[0] for r in a.usage] == ["anthropic-req", "codex-otlp", "gemini-otlp"]
    assert a.usage[0].ts.isoformat() == "2026-09-21T14:13:20.123000+00:00"


@pytest.mark.parametrize("ids", ["hex", "base64"])
def test_span_ids_in_hex_or_base64_give_the_same_hex_ids(ids):
    if ids == "hex":
        body = _one_span_json(TRACE.hex(), SPAN.hex(), parentSpanId="")
    else:
        body = _one_span_json(base64.b64encode(TRACE).decode(), base64.b64encode(SPAN).decode())
    (span,) = decode("traces", body, "application/json").spans
    assert span["trace_id"] == TRACE.hex() and span["span_id"] == SPAN.hex() and span["parent_span_id"] is None
    assert (span["start_ns"], span["end_ns"], span["service"]) == (1000, 3000, "svc")


def test_json_quirks_int_as_string_or_number_snake_case_names_and_enum_names():
    doc = {"resource_logs": [{"scope_logs": [{"log_records": [{
        "time_unix_nano": 1_790_000_000_000_000_000,
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": [
            {"key": "request_id", "value": {"stringValue": "req_q"}},
            {"key": "input_tokens", "value": {"intValue": "4"}},
            {"key": "output_tokens", "value": {"intValue": 310}},
            {"key": "cache_read_tokens", "value": {"int_value": "52000"}},
            {"key": "cache_creation_tokens", "value": {"doubleValue": 1800.0}},
            {"key": "cost_usd", "value": {"stringValue": "0.0312"}},
            {"key": "extra", "value": {"kvlistValue": {"values": [
                {"key": "list", "value": {"arrayValue": {"values": [{"boolValue": True}, {}]}}}]}}},
        ]}]}]}]}
    out = decode("logs", json.dumps(doc).encode(), "application/json", PRICES)
    (row,) = out.usage
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_write_tokens) == (4, 310, 52000, 1800)
    assert row.cost_usd == pytest.approx(0.0312) and row.cost_source == "reported"
    body = _one_span_json(TRACE.hex(), SPAN.hex(), kind="SPAN_KIND_SERVER", status={"code": "STATUS_CODE_ERROR"})
    (span,) = decode("traces", body, "application/json").spans
    assert (span["kind"], span["status"]) == ("server", "error")


def test_a_claude_event_without_cost_is_priced_from_the_table_or_left_unpriced():
    req = p.logs_request([p.claude_api_request("req_p", cost_usd=None, input_tokens=1000, output_tokens=100),
                          p.claude_api_request("req_u", cost_usd=None, model="no-such-model-anywhere")])
    priced, unpriced = decode("logs", p.otlp_proto(req), "application/x-protobuf", PRICES).usage
    expected = PRICES.cost("claude-sonnet-4-5-20250929", input_tokens=1000, output_tokens=100)
    assert expected is not None and priced.cost_usd == pytest.approx(expected)
    assert priced.cost_source == "calculated" and priced.price_table_sha256 == PRICES.sha256
    assert unpriced.cost_usd is None and unpriced.cost_source == "unpriced"


def test_an_event_without_request_id_still_gets_a_stable_key():
    req = p.logs_request([p.claude_api_request(None, ts_ns=1_790_000_000_000_000_000)])
    first = decode("logs", p.otlp_proto(req), "application/x-protobuf").usage[0].key
    again = decode("logs", p.otlp_json(req), "application/json").usage[0].key
    assert first == again and first.startswith("claude-otlp:sess-1:")


def test_events_that_are_not_calls_make_no_rows_but_are_counted():
    req = p.logs_request([p.claude_other_event("tool_decision"), p.codex_api_request(),
                          p.claude_api_request("req_x")])
    out = decode("logs", p.otlp_proto(req), "application/x-protobuf")
    assert len(out.usage) == 1 and out.records == 3
    assert out.events == {"claude_code.tool_decision": 1, "codex.api_request": 1, "claude_code.api_request": 1}


@pytest.mark.parametrize(("body", "where"), [
    (b'{"resourceLogs": [{"scopeLogs": {"x": 1}}]}', "resourceLogs[0].scopeLogs: expected a list"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}',
     "resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": "k", "value": '
     b'{"stringValue": "a", "intValue": 1}}]}]}]}]}', "value must have one field"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"value": {}}]}]}]}]}', "key: expected a string"),
])
def test_malformed_json_names_the_field(body, where):
    with pytest.raises(PayloadError) as err:
        decode("logs", body, "application/json")
    assert where in str(err.value)


@pytest.mark.parametrize(("trace_id", "span_id"), [
    ("00" * 16, SPAN.hex()),  # all-zero trace id is invalid
    (TRACE.hex()[:30], SPAN.hex()),  # wrong length
    (TRACE.hex(), "not an id!"),
])
def test_bad_span_ids_are_refused(trace_id, span_id):
    with pytest.raises(PayloadError, match="Id"):
        decode("traces", _one_span_json(trace_id, span_id), "application/json")


def test_protobuf_span_with_a_short_id_is_refused():
    req = p.traces_request([p.make_span("s", span_id=b"\x01\x02")])
    with pytest.raises(PayloadError, match="span_id: id must be 8 bytes"):
        decode("traces", p.otlp_proto(req), "application/x-protobuf")


def test_negative_or_non_numeric_tokens_reject_only_that_record():
    req = p.logs_request([p.claude_api_request("req_neg", input_tokens=-5), p.claude_api_request("req_ok")])
    out = decode("logs", p.otlp_proto(req), "application/x-protobuf")
    assert [r.request_id for r in out.usage] == ["req_ok"]
    assert out.rejected == 1 and "input_tokens=-5" in out.errors[0]


def test_codex_cached_above_input_is_rejected():
    req = p.logs_request([p.codex_completed(input_tokens=10, cached=20)])
    out = decode("logs", p.otlp_json(req), "application/json")
    assert out.usage == [] and out.rejected == 1


def test_the_real_codex_0_169_export_gives_one_row_per_completed_response():
    """Codex 0.169's own OTLP/JSON logs (captured here against a scripted Responses server that reported
    input 3500 of which 750 cached, output 425 of which 275 reasoning). It logs `response.completed` twice,
    once without tokens, and leaves timeUnixNano at 0 (only observedTimeUnixNano is set)."""
    body = (FIXTURES / "otlp" / "codex_0.169.0_logs.json").read_bytes()
    out = decode("logs", body, "application/json", PRICES)
    (row,) = out.usage
    assert (row.input_tokens, row.cache_read_tokens, row.cache_write_tokens) == (2750, 750, 0)
    assert (row.output_tokens, row.reasoning_tokens) == (425, 275)
    assert row.model == "gpt-5-codex" and row.session_id == "01a213f0-9ae2-74c0-bc8e-b03eb582ed20"
    assert row.ts.year == 2026 and out.rejected == 0
    assert out.events["codex.sse_event"] == 6 and out.events["codex.api_request"] == 1


def test_the_real_codex_0_169_traces_decode_to_spans():
    import gzip

    body = gzip.decompress((FIXTURES / "otlp" / "codex_0.169.0_traces.json.gz").read_bytes())
    spans = decode("traces", body, "application/json").spans
    assert len(spans) == 395 and len({(s["trace_id"], s["span_id"]) for s in spans}) == 395
    assert all(len(s["trace_id"]) == 32 and len(s["span_id"]) == 16 for s in spans)
    assert {s["service"] for s in spans} == {"codex_exec"}
