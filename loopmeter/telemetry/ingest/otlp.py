"""OTLP payloads (protobuf or OTLP/JSON) -> usage rows, span rows and metric counts.

Used by the receiver (`loopmeter collect`); light on purpose: no SQLModel, no SDK.

Usage rows come from the agents' per-call log events, which carry exact tokens:
- Claude Code `claude_code.api_request` -> key "anthropic-req:<request_id>" (the same
  key the transcript ingester uses, so a call seen both ways is stored once), with
  the reported `cost_usd` (cost_source "reported").
- Codex `codex.sse_event` of kind `response.completed` (its `codex.api_request`
  event carries no tokens) -> key "codex-otlp:<conversation.id>:<time>".
- Gemini CLI `gemini_cli.api_response` -> key "gemini-otlp:<session.id>:<prompt_id>:<time>".
Metrics are only counted: they are cumulative aggregates without request ids, so
turning them into rows would double-count calls already seen as events.
Traces become span rows.

OTLP/JSON quirks handled: trace and span ids as hex (the spec) or base64 (protobuf's
generic JSON mapping); 64-bit integers as strings or numbers; lowerCamelCase or
snake_case field names; enums as numbers or names.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

from loopmeter.records import UsageRow
from loopmeter.telemetry import tokens
from loopmeter.telemetry.costs import price_row

SIGNALS = ("logs", "metrics", "traces")
SOURCE = "otlp"
SPAN_KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"]
STATUS_CODES = ["unset", "ok", "error"]
METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_CAMEL = re.compile(r"_([a-z])")


class PayloadError(ValueError):
    """The request body cannot be decoded as an OTLP export request (HTTP 400)."""


class RecordError(ValueError):
    """One record is unusable (counted as rejected; the rest of the request is kept)."""


@dataclass
class LogRecord:
    time_ns: int
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str | None = None


@dataclass
class Decoded:
    """What one export request held."""

    signal: str
    records: int = 0  # log records, spans or metric data points
    usage: list[UsageRow] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)  # log event / metric name -> count
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5:
            self.errors.append(message)


# -- decoding entry point ----------------------------------------------------


def decode(signal: str, body: bytes | bytearray, content_type: str, prices: Any = None) -> Decoded:
    """Decode one export request; raises PayloadError when the body is not OTLP.

    `prices` is a PriceTable (or None) used when an event reports tokens but no cost.
    Callers that must bound memory call `count_values` first: decoding builds every value.
    """
    try:
        return _decode(signal, body, content_type, prices)
    except RecursionError:  # JSON arrays or values nested hundreds deep
        raise PayloadError("body is nested too deeply") from None


def _decode(signal: str, body: bytes | bytearray, content_type: str, prices: Any) -> Decoded:
    kind = content_type.split(";", 1)[0].strip().lower()
    out = Decoded(signal)
    if kind == "application/json":
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PayloadError(f"body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise PayloadError(f"body must be a JSON object, got {type(doc).__name__}")
        walker: _Walker = _JsonWalker(doc)
    elif kind in ("application/x-protobuf", "application/protobuf"):
        walker = _ProtoWalker(signal, body)
    else:
        raise PayloadError(f"unsupported Content-Type {content_type!r}")
    if signal == "logs":
        for rec in walker.logs():
            out.records += 1
            name = event_name(rec)
            if name:
                out.events[name] += 1
            try:
                row = usage_from_log(rec, name, prices)
            except RecordError as exc:
                out.reject(f"{name}: {exc}")
                continue
            if row is not None:
                out.usage.append(row)
    elif signal == "traces":
        for span in walker.spans():
            out.records += 1
            out.spans.append(span)
    elif signal == "metrics":
        for name, points in walker.metrics():
            out.records += points
            out.events[name] += points
    else:
        raise PayloadError(f"unknown signal {signal!r}")
    return out


# -- how much a body decodes to ---------------------------------------------

MAX_PROTO_DEPTH = 100  # nested messages a large protobuf body may have (the walk below refuses more)
MAX_VALUE_DEPTH = 32  # arrays and key-value lists within one attribute or body value (no agent nests any)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def count_values(signal: str, body: bytes | bytearray, content_type: str, limit: int) -> int:
    """How many values decoding `body` builds, at most: for OTLP/JSON the objects, arrays,
    members and elements (the bytes that start one: `{ [ , :` outside strings); for protobuf
    the messages (a wire-format walk, with the request's schema, that builds nothing).

    Cheap next to decoding, and it stops once past `limit`: a caller refuses such a body
    before it costs memory. Raises PayloadError for a protobuf body that is not well formed.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        return _count_json(body, limit)
    if kind in ("application/x-protobuf", "application/protobuf"):
        return _count_proto(body, _proto_schema(signal), limit)
    raise PayloadError(f"unsupported Content-Type {content_type!r}")


def _count_json(body: bytes | bytearray, limit: int) -> int:
    n = body.count(b"{") + body.count(b"[") + body.count(b",") + body.count(b":") + 1
    if n > limit and body.count(b'"') > 1:  # text with many commas can make the quick count too high
        stripped = _JSON_STRING.sub(b'""', body)
        n = stripped.count(b"{") + stripped.count(b"[") + stripped.count(b",") + stripped.count(b":") + 1
    return n


_Schema = dict[int, "_Schema"]  # field number -> the schema of a message-typed field


@lru_cache(maxsize=3)
def _proto_schema(signal: str) -> _Schema:
    if signal == "logs":
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest as Req
    elif signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # type: ignore[assignment]
            ExportTraceServiceRequest as Req,
        )
    elif signal == "metrics":
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # type: ignore[assignment]
            ExportMetricsServiceRequest as Req,
        )
    else:
        raise PayloadError(f"unknown signal {signal!r}")
    memo: dict[str, _Schema] = {}

    def schema(desc: Any) -> _Schema:
        if desc.full_name not in memo:
            out: _Schema = {}
            memo[desc.full_name] = out  # before its fields: an AnyValue holds AnyValues
            for f in desc.fields:
                if f.message_type is not None:
                    out[f.number] = schema(f.message_type)
        return memo[desc.full_name]

    return schema(Req.DESCRIPTOR)


def _varint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(value, position after it) of the base-128 varint at `pos`; IndexError when the body ends inside it."""
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _count_proto(buf: bytes | bytearray, schema: _Schema, limit: int) -> int:
    """Messages in a protobuf body by its wire format: tags and lengths only."""
    count = 0
    stack: list[tuple[int, int, _Schema]] = []
    pos, end = 0, len(buf)
    try:
        while True:
            if pos >= end:
                if pos > end:
                    raise PayloadError("body is not a protobuf message: a field runs past its end")
                if not stack:
                    return count
                pos, end, schema = stack.pop()
                continue
            tag, pos = _varint(buf, pos)
            wire = tag & 7
            if wire == 2:  # length-delimited: a message, a string, bytes or packed numbers
                n, pos = _varint(buf, pos)
                if pos + n > end:
                    raise PayloadError("body is not a protobuf message: a field runs past its end")
                child = schema.get(tag >> 3)
                if child is None:
                    pos += n
                    continue
                count += 1
                if count > limit:
                    return count
                if len(stack) >= MAX_PROTO_DEPTH:
                    raise PayloadError(f"body nests messages more than {MAX_PROTO_DEPTH} deep")
                stack.append((pos + n, end, schema))
                end, schema = pos + n, child
            elif wire == 0:
                _, pos = _varint(buf, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise PayloadError(f"body is not an OTLP protobuf message: wire type {wire}")
    except IndexError:
        raise PayloadError("body is not a protobuf message: it ends inside a field") from None


# -- shared helpers ----------------------------------------------------------


def _hex_id(raw: bytes, size: int, where: str, required: bool) -> str | None:
    if not raw or raw == bytes(len(raw)):
        if required:
            raise PayloadError(f"{where}: missing or all-zero id")
        return None
    if len(raw) != size:
        raise PayloadError(f"{where}: id must be {size} bytes, got {len(raw)}")
    return raw.hex()


def _json_id(value: Any, size: int, where: str, required: bool) -> str | None:
    if value is None or value == "":
        return _hex_id(b"", size, where, required)
    if not isinstance(value, str):
        raise PayloadError(f"{where}: id must be a string, got {type(value).__name__}")
    if len(value) == 2 * size:
        try:
            return _hex_id(bytes.fromhex(value), size, where, required)
        except ValueError:
            pass
    padded = value + "=" * (-len(value) % 4)
    for altchars in (None, b"-_"):  # protobuf's generic JSON mapping writes bytes as base64
        try:
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        return _hex_id(raw, size, where, required)
    raise PayloadError(f"{where}: id {value!r} is neither hex nor base64")


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise PayloadError(f"{where}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise PayloadError(f"{where}: expected an integer, got {value!r}")


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise PayloadError(f"{where}: expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # also "NaN", "Infinity", "-Infinity"
        except ValueError:
            pass
    raise PayloadError(f"{where}: expected a number, got {value!r}")


@lru_cache(maxsize=256)
def _camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def _get(d: dict[str, Any], name: str) -> Any:
    """A field by its snake_case proto name or its lowerCamelCase JSON name."""
    value = d.get(_camel(name))
    return d.get(name) if value is None else value


def _list(d: dict[str, Any], name: str, where: str) -> list[Any]:
    value = _get(d, name)
    if value is None:
        return []
    if not isinstance(value, list):
        path = f"{where}.{_camel(name)}" if where else _camel(name)
        raise PayloadError(f"{path}: expected a list, got {type(value).__name__}")
    return value


def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object, got {type(value).__name__}")
    return value


# -- walkers: one per encoding, the same records out -------------------------


class _Walker:
    def logs(self) -> Iterator[LogRecord]:
        raise NotImplementedError

    def spans(self) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def metrics(self) -> Iterator[tuple[str, int]]:
        raise NotImplementedError


class _JsonWalker(_Walker):
    def __init__(self, doc: dict[str, Any]):
        self.doc = doc

    def _value(self, v: Any, where: str, depth: int = 0) -> Any:
        v = _obj(v, where)
        if not v:
            return None
        set_fields = [(k, x) for k, x in v.items() if x is not None]
        if not set_fields:
            return None
        if len(set_fields) > 1:  # an AnyValue holds exactly one of its fields
            raise PayloadError(f"{where}: a value must have one field, got {sorted(k for k, _ in set_fields)}")
        key, raw = set_fields[0]
        if key in ("stringValue", "string_value"):
            if not isinstance(raw, str):
                raise PayloadError(f"{where}.stringValue: expected a string")
            return raw
        if key in ("intValue", "int_value"):
            return _as_int(raw, f"{where}.intValue")
        if key in ("doubleValue", "double_value"):
            return _as_float(raw, f"{where}.doubleValue")
        if key in ("boolValue", "bool_value"):
            if not isinstance(raw, bool):
                raise PayloadError(f"{where}.boolValue: expected true or false")
            return raw
        if key in ("bytesValue", "bytes_value"):
            if not isinstance(raw, str):
                raise PayloadError(f"{where}.bytesValue: expected a base64 string")
            return raw
        if key in ("arrayValue", "array_value"):
            _check_depth(depth, where)
            return [self._value(x, f"{where}.arrayValue.values[{i}]", depth + 1)
                    for i, x in enumerate(_list(_obj(raw, where), "values", where))]
        if key in ("kvlistValue", "kvlist_value"):
            _check_depth(depth, where)
            return self._attrs(_list(_obj(raw, where), "values", where), f"{where}.kvlistValue", depth + 1)
        raise PayloadError(f"{where}: unknown value field {key!r}")

    def _attrs(self, items: list[Any], where: str, depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, kv in enumerate(items):
            kv = _obj(kv, f"{where}[{i}]")
            key = kv.get("key")
            if not isinstance(key, str):
                raise PayloadError(f"{where}[{i}].key: expected a string")
            out[key] = self._value(kv.get("value"), f"{where}[{i}].value", depth)
        return out

    def _resource(self, res: Any, where: str) -> dict[str, Any]:
        return self._attrs(_list(_obj(res, where), "attributes", where), f"{where}.attributes")

    def _scopes(self, top: str, scopes: str, items: str) -> Iterator[tuple[dict[str, Any], dict[str, Any], Any, str]]:
        for i, rl in enumerate(_list(self.doc, top, "")):
            w = f"{_camel(top)}[{i}]"
            rl = _obj(rl, w)
            resource = self._resource(_get(rl, "resource"), f"{w}.resource")
            for j, sl in enumerate(_list(rl, scopes, w)):
                sw = f"{w}.{_camel(scopes)}[{j}]"
                sl = _obj(sl, sw)
                scope = _obj(_get(sl, "scope"), f"{sw}.scope")
                for k, item in enumerate(_list(sl, items, sw)):
                    yield resource, scope, item, f"{sw}.{_camel(items)}[{k}]"

    def logs(self) -> Iterator[LogRecord]:
        for resource, scope, lr, w in self._scopes("resource_logs", "scope_logs", "log_records"):
            lr = _obj(lr, w)
            t = _get(lr, "time_unix_nano")
            t = t if t not in (None, 0, "0") else _get(lr, "observed_time_unix_nano")
            yield LogRecord(
                time_ns=_as_int(t, f"{w}.timeUnixNano") if t is not None else 0,
                body=self._value(lr.get("body"), f"{w}.body"),
                attributes=self._attrs(_list(lr, "attributes", w), f"{w}.attributes"),
                resource=resource,
                scope=scope.get("name"),
            )

    def spans(self) -> Iterator[dict[str, Any]]:
        for resource, _scope, sp, w in self._scopes("resource_spans", "scope_spans", "spans"):
            sp = _obj(sp, w)
            status = _obj(sp.get("status"), f"{w}.status")
            start = _get(sp, "start_time_unix_nano")
            end = _get(sp, "end_time_unix_nano")
            yield span_row(
                trace_id=_json_id(_get(sp, "trace_id"), 16, f"{w}.traceId", True),
                span_id=_json_id(_get(sp, "span_id"), 8, f"{w}.spanId", True),
                parent_span_id=_json_id(_get(sp, "parent_span_id"), 8, f"{w}.parentSpanId", False),
                name=str(sp.get("name") or ""),
                kind=_enum(sp.get("kind"), SPAN_KINDS, "SPAN_KIND_", f"{w}.kind"),
                start_ns=_as_int(start, f"{w}.startTimeUnixNano") if start is not None else 0,
                end_ns=_as_int(end, f"{w}.endTimeUnixNano") if end is not None else 0,
                status=_enum(status.get("code"), STATUS_CODES, "STATUS_CODE_", f"{w}.status.code"),
                attributes=self._attrs(_list(sp, "attributes", w), f"{w}.attributes"),
                resource=resource,
            )

    def metrics(self) -> Iterator[tuple[str, int]]:
        for _resource, _scope, m, w in self._scopes("resource_metrics", "scope_metrics", "metrics"):
            m = _obj(m, w)
            name = m.get("name")
            if not isinstance(name, str) or not name:
                raise PayloadError(f"{w}.name: a metric needs a name")
            points = 0
            for kind in METRIC_KINDS:
                data = _get(m, kind)
                if data is not None:
                    points += len(_list(_obj(data, f"{w}.{kind}"), "data_points", f"{w}.{kind}"))
            yield name, points


def _check_depth(depth: int, where: str) -> None:
    if depth >= MAX_VALUE_DEPTH:
        raise PayloadError(f"{where}: arrays and key-value lists nested more than {MAX_VALUE_DEPTH} deep")


def _enum(value: Any, names: list[str], prefix: str, where: str) -> str:
    if value is None:
        return names[0]
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        name = value.upper().removeprefix(prefix).lower()
        if name in names:
            return name
        raise PayloadError(f"{where}: unknown value {value!r}")
    n = _as_int(value, where)
    if 0 <= n < len(names):
        return names[n]
    raise PayloadError(f"{where}: unknown value {n}")


class _ProtoWalker(_Walker):
    def __init__(self, signal: str, body: bytes | bytearray):
        from google.protobuf.message import DecodeError

        if signal == "logs":
            from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest as Req
        elif signal == "traces":
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # type: ignore[assignment]
                ExportTraceServiceRequest as Req,
            )
        else:
            from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # type: ignore[assignment]
                ExportMetricsServiceRequest as Req,
            )
        self.req = Req()
        try:
            self.req.ParseFromString(body)
        except (DecodeError, ValueError) as exc:
            raise PayloadError(f"body is not a protobuf {Req.__name__}: {exc}") from exc

    def _value(self, v: Any, depth: int = 0) -> Any:
        which = v.WhichOneof("value")
        if which is None:
            return None
        if which == "array_value":
            _check_depth(depth, "a value")
            return [self._value(x, depth + 1) for x in v.array_value.values]
        if which == "kvlist_value":
            _check_depth(depth, "a value")
            return self._attrs(v.kvlist_value.values, depth + 1)
        if which == "bytes_value":
            return base64.b64encode(v.bytes_value).decode()
        return getattr(v, which)

    def _attrs(self, kvs: Any, depth: int = 0) -> dict[str, Any]:
        return {kv.key: self._value(kv.value, depth) for kv in kvs}

    def logs(self) -> Iterator[LogRecord]:
        for rl in self.req.resource_logs:  # type: ignore[attr-defined]
            resource = self._attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    yield LogRecord(
                        time_ns=lr.time_unix_nano or lr.observed_time_unix_nano,
                        body=self._value(lr.body) if lr.HasField("body") else None,
                        attributes=self._attrs(lr.attributes),
                        resource=resource,
                        scope=sl.scope.name or None,
                    )

    def spans(self) -> Iterator[dict[str, Any]]:
        for i, rs in enumerate(self.req.resource_spans):  # type: ignore[attr-defined]
            resource = self._attrs(rs.resource.attributes)
            for j, ss in enumerate(rs.scope_spans):
                for k, sp in enumerate(ss.spans):
                    w = f"resource_spans[{i}].scope_spans[{j}].spans[{k}]"
                    yield span_row(
                        trace_id=_hex_id(sp.trace_id, 16, f"{w}.trace_id", True),
                        span_id=_hex_id(sp.span_id, 8, f"{w}.span_id", True),
                        parent_span_id=_hex_id(sp.parent_span_id, 8, f"{w}.parent_span_id", False),
                        name=sp.name,
                        kind=SPAN_KINDS[sp.kind] if 0 <= sp.kind < len(SPAN_KINDS) else "unspecified",
                        start_ns=sp.start_time_unix_nano,
                        end_ns=sp.end_time_unix_nano,
                        status=STATUS_CODES[sp.status.code] if 0 <= sp.status.code < 3 else "unset",
                        attributes=self._attrs(sp.attributes),
                        resource=resource,
                    )

    def metrics(self) -> Iterator[tuple[str, int]]:
        for rm in self.req.resource_metrics:  # type: ignore[attr-defined]
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    which = m.WhichOneof("data")
                    yield m.name, len(getattr(m, which).data_points) if which else 0


# -- spans -------------------------------------------------------------------


def span_row(*, trace_id: str | None, span_id: str | None, parent_span_id: str | None, name: str, kind: str,
             start_ns: int, end_ns: int, status: str, attributes: dict[str, Any],
             resource: dict[str, Any]) -> dict[str, Any]:
    """A `span` table row, in the shape loopmeter's own span exporter writes."""
    run_id = attributes.get("loopmeter.run.id")
    attempt_id = attributes.get("loopmeter.attempt.id")
    service = resource.get("service.name")
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id,
        "name": name[:512],
        "kind": kind,
        "start_ns": start_ns,
        "end_ns": max(end_ns, start_ns),
        "status": status,
        "attributes": json.dumps(attributes, default=str, sort_keys=True),
        "service": str(service)[:128] if service is not None else None,
        "run_id": str(run_id)[:32] if run_id is not None else None,
        "attempt_id": str(attempt_id)[:64] if attempt_id is not None else None,
    }


# -- log events -> usage rows ------------------------------------------------


def event_name(rec: LogRecord) -> str | None:
    """The event's full name: `claude_code.api_request`, `codex.sse_event`, `gemini_cli.api_response`."""
    name = rec.attributes.get("event.name")
    if isinstance(name, str) and "." in name:
        return name
    if isinstance(rec.body, str) and re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+", rec.body):
        return rec.body  # Claude Code puts the full name in the body, the short one in event.name
    if isinstance(name, str) and name:
        service = rec.resource.get("service.name")
        if service == "claude-code":
            return f"claude_code.{name}"
        return name
    return None


_N = TypeVar("_N", int, float)


def _attribute(attrs: dict[str, Any], name: str, convert: Callable[[Any, str], _N], what: str) -> _N | None:
    """Attribute `name` converted, None when absent or empty; RecordError naming it when it is not `what`."""
    value = attrs.get(name)
    if value is None or value == "":
        return None
    try:
        return convert(value, name)
    except PayloadError as exc:
        raise RecordError(f"attribute {name}={value!r} is not {what}") from exc


def _tokens(attrs: dict[str, Any], name: str) -> int | None:
    n = _attribute(attrs, name, _as_int, "a token count")
    if n is not None and n < 0:
        raise RecordError(f"attribute {name}={n} is negative")
    return n


def _counts(normalise: Callable[..., tokens.Counts], *counts: int | None) -> dict[str, Any]:
    """A record's token counts through its vendor's function (telemetry/tokens.py), as UsageRow
    fields; counts that contradict each other reject the record."""
    try:
        return normalise(*counts)._asdict()
    except tokens.TokenCountError as exc:
        raise RecordError(str(exc)) from exc


def _number(attrs: dict[str, Any], name: str) -> float | None:
    x = _attribute(attrs, name, _as_float, "a number")
    if x is not None and (math.isnan(x) or math.isinf(x) or x < 0):
        raise RecordError(f"attribute {name}={attrs[name]!r} is not a usable amount")
    return x


def _timestamp(rec: LogRecord) -> datetime:
    if rec.time_ns > 0:
        seconds, ns = divmod(rec.time_ns, 1_000_000_000)
        return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=ns // 1000)
    stamp = rec.attributes.get("event.timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    raise RecordError("no timestamp (timeUnixNano, observedTimeUnixNano or event.timestamp)")


def _str(*values: Any) -> str | None:
    for v in values:
        if v is not None and v != "":
            return str(v)
    return None


def _project(rec: LogRecord) -> str | None:
    # OTLP carries no working directory; people may tag one with OTEL_RESOURCE_ATTRIBUTES=project=...
    return _str(rec.resource.get("project"), rec.resource.get("loopmeter.project"), rec.attributes.get("project"))


def usage_from_log(rec: LogRecord, name: str | None, prices: Any = None) -> UsageRow | None:
    """One usage row for an agent's per-call event, None for every other log record."""
    if name == "claude_code.api_request":
        return _claude_code(rec, prices)
    if name == "codex.sse_event" and rec.attributes.get("event.kind") == "response.completed":
        if rec.attributes.get("input_token_count") is None:
            return None  # the failed-completion variant carries an error, no tokens
        return _codex(rec, prices)
    if name == "gemini_cli.api_response":
        return _gemini(rec, prices)
    return None


def _claude_code(rec: LogRecord, prices: Any) -> UsageRow | None:
    a = rec.attributes
    model = _str(a.get("model"))
    request_id = _str(a.get("request_id"))
    session = _str(a.get("session.id"), rec.resource.get("session.id"))
    if request_id:
        key = f"anthropic-req:{request_id}"
    else:
        key = f"claude-otlp:{session}:{a.get('prompt.id')}:{a.get('event.sequence')}:{rec.time_ns}"
    row = UsageRow(
        key=key, source=SOURCE, ts=_timestamp(rec), model=model, agent="claude-code", provider="anthropic",
        session_id=session, project=_project(rec),
        user=_str(a.get("user.email"), a.get("user.account_uuid"), a.get("user.id")),
        **_counts(tokens.anthropic, _tokens(a, "input_tokens"), _tokens(a, "cache_read_tokens"),
                  _tokens(a, "cache_creation_tokens"), _tokens(a, "output_tokens")),
        latency_ms=_number(a, "duration_ms"), request_id=request_id,
    )
    if model == "<synthetic>" and not row.total_tokens:
        return None
    return price_row(row, prices, _number(a, "cost_usd"))


def _codex(rec: LogRecord, prices: Any) -> UsageRow:
    a = rec.attributes
    counts = _counts(tokens.openai, _tokens(a, "input_token_count"), _tokens(a, "cached_token_count"),
                     _tokens(a, "output_token_count"), _tokens(a, "reasoning_token_count"),
                     _tokens(a, "cache_write_token_count"))  # cache writes: reported by Codex 0.169
    conversation = _str(a.get("conversation.id"), rec.resource.get("conversation.id"))
    ts = _timestamp(rec)
    stamp = rec.time_ns or int(ts.timestamp() * 1e9)
    row = UsageRow(
        key=f"codex-otlp:{conversation}:{stamp}", source=SOURCE, ts=ts, model=_str(a.get("model"), a.get("slug")),
        agent="codex", provider="openai", session_id=conversation, project=_project(rec),
        user=_str(a.get("user.email"), a.get("user.account_id")), **counts,
        latency_ms=_number(a, "duration_ms") or None,
    )
    return price_row(row, prices)


def _gemini(rec: LogRecord, prices: Any) -> UsageRow:
    a = rec.attributes
    counts = _counts(tokens.gemini, _tokens(a, "input_token_count"), _tokens(a, "cached_content_token_count"),
                     _tokens(a, "output_token_count"), _tokens(a, "thoughts_token_count"), _tokens(a, "tool_token_count"))
    session = _str(a.get("session.id"), rec.resource.get("session.id"))
    ts = _timestamp(rec)
    stamp = rec.time_ns or int(ts.timestamp() * 1e9)
    row = UsageRow(
        key=f"gemini-otlp:{session}:{a.get('prompt_id')}:{stamp}", source=SOURCE, ts=ts, model=_str(a.get("model")),
        agent="gemini", provider="gemini", session_id=session, project=_project(rec),
        user=_str(a.get("user.email"), a.get("installation.id")), **counts, latency_ms=_number(a, "duration_ms"),
    )
    return price_row(row, prices)
