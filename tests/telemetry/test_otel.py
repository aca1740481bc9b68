import json
from datetime import UTC, datetime

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import select

from loopmeter.records import UsageRow
from loopmeter.store import Span
from loopmeter.telemetry.otel import setup, usage_attributes


def test_store_exporter_writes_chat_spans_with_gen_ai_attributes(store):
    reader = InMemoryMetricReader()
    tel = setup(store, metric_readers=[reader], otlp_endpoint="")
    row = UsageRow(key="k1", source="loop", ts=datetime.now(UTC), model="gpt-5", provider="openai",
                   input_tokens=100, cache_read_tokens=20, output_tokens=7, cost_usd=0.001,
                   cost_source="calculated", run_id="01RUN", attempt_id="01RUN-a")
    with tel.tracer.start_as_current_span("invoke_agent builtin") as parent:
        with tel.tracer.start_as_current_span(f"chat {row.model}", attributes=usage_attributes(row)):
            pass
        parent.set_attribute("loopmeter.run.id", "01RUN")
    tel.record_usage(row, duration_s=0.25)
    tel.flush()

    with store.session() as s:
        spans = {r[0].name: r[0] for r in s.exec(select(Span))}
    assert set(spans) == {"invoke_agent builtin", "chat gpt-5"}
    chat = spans["chat gpt-5"]
    attrs = json.loads(chat.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-5"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] == 100
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 20
    assert chat.parent_span_id == spans["invoke_agent builtin"].span_id
    assert chat.run_id == "01RUN" and chat.end_ns >= chat.start_ns

    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "loopmeter.cost"} <= set(metrics)
    token_points = metrics["gen_ai.client.token.usage"].data.data_points
    by_type = {p.attributes["gen_ai.token.type"]: p.sum for p in token_points}
    assert by_type == {"input": 120, "output": 7}
    assert metrics["loopmeter.cost"].data.data_points[0].value == 0.001
    tel.shutdown()


def test_a_bounded_flush_returns_in_time_while_the_endpoint_hangs_and_the_export_still_arrives():
    """A Ray task flushes before it returns (loopmeter/executors/ray_executor.py), bounded: an OTLP
    endpoint that does not answer costs the task the bound, and the export goes on behind it."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release, got = threading.Event(), []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            release.wait(30)
            got.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tel = setup(otlp_endpoint=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        tel.record_usage(UsageRow(key="k1", source="loop", ts=datetime.now(UTC), model="gpt-5", provider="openai",
                                  input_tokens=10, output_tokens=2, latency_ms=40.0))
        started = time.monotonic()
        assert tel.flush(timeout_s=0.5) is False
        assert time.monotonic() - started < 2.0
        release.set()
        assert tel.flush(timeout_s=10) is True
        assert [p for p, _ in got].count("/v1/metrics") >= 1 and b"gen_ai.client.token.usage" in got[0][1]
    finally:
        release.set()
        tel.shutdown()
        server.shutdown()
