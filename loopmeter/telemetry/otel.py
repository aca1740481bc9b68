"""One setup for OpenTelemetry tracing and metrics.

Spans go to the store (batched) through `StoreSpanExporter`; when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans and metrics also go out over OTLP/HTTP.
Model calls follow the GenAI semantic conventions (`chat {model}` spans,
`gen_ai.*` attributes, `gen_ai.client.token.usage` and
`gen_ai.client.operation.duration` histograms) plus a `loopmeter.cost` counter (USD).

Every model call loopmeter makes itself (the builtin agent, model tasks) records
those metrics through `Telemetry.record_usage` or `record_failed_call`, on the
process-wide telemetry unless the caller hands in its own (docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from loopmeter import __version__

if TYPE_CHECKING:
    from loopmeter.records import UsageRow
    from loopmeter.store import Store

# Attribute names (GenAI semantic conventions, plus loopmeter's own).
OP = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
AGENT_NAME = "gen_ai.agent.name"
TOOL_NAME = "gen_ai.tool.name"
IN_TOKENS = "gen_ai.usage.input_tokens"
OUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
RUN_ID = "loopmeter.run.id"
ATTEMPT_ID = "loopmeter.attempt.id"
COST = "loopmeter.cost_usd"
TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
COST_SOURCE = "loopmeter.cost_source"

# Histogram buckets the GenAI semantic conventions ask for (the SDK's default ones end at 10,000).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


class StoreSpanExporter(SpanExporter):
    """Writes finished spans as `span` rows. Use it behind a BatchSpanProcessor."""

    def __init__(self, store: Store):
        self.store = store
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            self.store.add_spans([span_row(s) for s in spans])
        except Exception:  # an exporter must never raise into the app
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_row(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None  # finished SDK spans always carry a context
    attrs = dict(span.attributes or {})
    parent = span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name.lower() if span.kind is not None else None,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or span.start_time or 0,
        "status": span.status.status_code.name.lower() if span.status is not None else None,
        "attributes": json.dumps(attrs, default=str, sort_keys=True),
        "service": span.resource.attributes.get("service.name") if span.resource else None,
        "run_id": attrs.get(RUN_ID),
        "attempt_id": attrs.get(ATTEMPT_ID),
    }


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: trace.Tracer
    meter: metrics.Meter
    token_usage: metrics.Histogram
    op_duration: metrics.Histogram
    cost_counter: metrics.Counter

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Export the finished spans and the metrics recorded so far, now. With `timeout_s`, wait at
        most that long (an export still running goes on in the background); False if it did not end."""
        if timeout_s is None:
            self.tracer_provider.force_flush()
            self.meter_provider.force_flush()
            return True
        millis = int(timeout_s * 1000)
        done = threading.Event()

        def flush() -> None:
            self.tracer_provider.force_flush(millis)
            self.meter_provider.force_flush(millis)
            done.set()

        threading.Thread(target=flush, name="loopmeter-telemetry-flush", daemon=True).start()
        return done.wait(timeout_s)

    def record_usage(self, row: UsageRow, duration_s: float | None = None, operation: str = "chat") -> None:
        """Metrics for one model call that answered, with GenAI attribute names. Input tokens
        include cached ones (as the conventions ask); the duration is `row.latency_ms` unless
        given; an unpriced call adds nothing to the cost counter (never a 0)."""
        attrs = {OP: operation, PROVIDER: row.provider or "unknown", REQUEST_MODEL: row.model or "unknown"}
        for kind, value in (
            ("input", (row.input_tokens or 0) + (row.cache_read_tokens or 0) + (row.cache_write_tokens or 0)),
            ("output", row.output_tokens or 0),
        ):
            self.token_usage.record(value, {**attrs, TOKEN_TYPE: kind})
        if duration_s is None and row.latency_ms is not None:
            duration_s = row.latency_ms / 1000
        if duration_s is not None:
            self.op_duration.record(duration_s, attrs)
        if row.cost_usd is not None:
            self.cost_counter.add(row.cost_usd, {**attrs, COST_SOURCE: row.cost_source})

    def record_failed_call(self, *, provider: str | None, model: str | None, duration_s: float,
                           error_type: str, operation: str = "chat") -> None:
        """The duration of a model call that failed, with `error.type` (e.g. the exception's class name)."""
        attrs = {OP: operation, PROVIDER: provider or "unknown", REQUEST_MODEL: model or "unknown",
                 ERROR_TYPE: error_type}
        self.op_duration.record(duration_s, attrs)


def usage_attributes(row: UsageRow) -> dict[str, Any]:
    """`gen_ai.*` span attributes for one model call (None values left out)."""
    attrs: dict[str, Any] = {
        OP: "chat",
        PROVIDER: row.provider,
        REQUEST_MODEL: row.model,
        IN_TOKENS: row.input_tokens,
        OUT_TOKENS: row.output_tokens,
        CACHE_READ: row.cache_read_tokens,
        CACHE_WRITE: row.cache_write_tokens,
        COST: row.cost_usd,
        RUN_ID: row.run_id,
        ATTEMPT_ID: row.attempt_id,
    }
    return {k: v for k, v in attrs.items() if v is not None}


_lock = threading.Lock()
_current: Telemetry | None = None


def setup(
    store: Store | None = None,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    otlp_endpoint: str | None = None,
    batch: bool = True,
    service_name: str = "loopmeter",
) -> Telemetry:
    """Build tracer and meter providers. Does not touch the global providers.

    `store`: spans are written as `span` rows. `otlp_endpoint` (default: the
    `OTEL_EXPORTER_OTLP_ENDPOINT` variable): spans and metrics also go out over OTLP/HTTP.
    """
    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    tracer_provider = TracerProvider(resource=resource)
    processor = BatchSpanProcessor if batch else SimpleSpanProcessor
    if store is not None:
        tracer_provider.add_span_processor(processor(StoreSpanExporter(store)))
    for exporter in span_exporters:
        tracer_provider.add_span_processor(processor(exporter))
    readers = list(metric_readers)
    endpoint = otlp_endpoint if otlp_endpoint is not None else os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = endpoint.rstrip("/")
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=base + "/v1/traces")))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=base + "/v1/metrics")))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    tracer = tracer_provider.get_tracer("loopmeter", __version__)
    meter = meter_provider.get_meter("loopmeter", __version__)
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        tracer=tracer,
        meter=meter,
        token_usage=meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per model call",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        ),
        op_duration=meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Duration of a model call",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
        cost_counter=meter.create_counter("loopmeter.cost", unit="USD", description="Spend on model calls"),
    )


def get_telemetry(store: Store | None = None) -> Telemetry:
    """The process-wide telemetry (created on first use, writing spans to `store`). Its metrics
    go out over OTLP when configured: every `OTEL_METRIC_EXPORT_INTERVAL` (60 s unless set) and
    once more when the process exits."""
    global _current
    with _lock:
        if _current is None:
            _current = setup(store)
        return _current


def flush_telemetry(timeout_s: float) -> bool:
    """Flush the process-wide telemetry if this process made one (`Telemetry.flush`); True if it had
    nothing to send or sent it within `timeout_s`."""
    with _lock:
        current = _current
    return current.flush(timeout_s) if current is not None else True


def shutdown_telemetry() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.shutdown()
            _current = None
