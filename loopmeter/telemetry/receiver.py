"""OTLP/HTTP receiver: agents' logs, metrics and traces -> usage rows and spans.

HTTP threads decode each request (protobuf or JSON, gzip or not, Content-Length or
chunked) and put the result on a bounded queue; one writer thread takes batches off
it and inserts them. A request is answered 200 only once it is on the queue; when the
queue is full the answer is 503 with Retry-After (the exporter retries), so nothing
accepted is dropped. `stop()` stops accepting, then flushes everything accepted.

    receiver = Receiver(store, port=0)
    port = receiver.start()
    ...
    receiver.stop()
"""

from __future__ import annotations

import ipaddress
import json
import queue
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loopmeter.errors import LoopmeterError
from loopmeter.records import UsageRow
from loopmeter.telemetry.ingest.otlp import Decoded, PayloadError, decode

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
PATHS = {"/v1/logs": "logs", "/v1/metrics": "metrics", "/v1/traces": "traces"}
MAX_BODY = 64 * 1024 * 1024  # decoded bytes per request
DRAIN_FACTOR = 4  # an oversized body up to this many times the limit is read, so the client gets the 413
RETRY_AFTER_S = 2
MEDIA_TYPES = ("application/x-protobuf", "application/protobuf", "application/json")


class _Overloaded(Exception):
    pass


@dataclass
class _Batch:
    usage: list[UsageRow] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.usage) + len(self.spans)


class ReceiverStats:
    """Counters since start (thread-safe). `snapshot()` gives a dict with stable keys."""

    KEYS = ("requests", "bad_requests", "overloaded", "log_records", "metric_points", "spans_received",
            "usage_accepted", "usage_new", "usage_duplicate", "spans_stored", "rejected_records", "write_errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def add(self, **counts: int) -> None:
        with self._lock:
            self._c.update(counts)

    def add_events(self, events: Counter[str]) -> None:
        with self._lock:
            self.events.update(events)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {k: self._c.get(k, 0) for k in self.KEYS}
            out["events"] = dict(self.events)
        return out


class Receiver:
    """An OTLP/HTTP receiver writing to `store`. Port 0 picks a free port."""

    def __init__(
        self,
        store: Any,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        queue_size: int = 1024,
        max_pending_rows: int = 200_000,
        batch_rows: int = 2000,
        max_body: int = MAX_BODY,
        prices: Any = None,
        log: Callable[[str], None] | None = None,
        summary_every_s: float | None = None,
        spill_dir: Path | None = None,
    ):
        self.store = store
        self.host = host
        self.port = port
        self.max_body = max_body
        self.batch_rows = batch_rows
        self.prices = prices
        self.log = log or (lambda line: None)
        self.summary_every_s = summary_every_s
        self.spill_dir = spill_dir
        self.stats = ReceiverStats()
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=queue_size)
        self.max_pending_rows = max_pending_rows
        self._pending_rows = 0  # accepted, not yet written: bounds memory as well as the queue length
        self._httpd: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._give_up = threading.Event()
        self._accepting = False
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self.unsaved: Path | None = None

    # -- life cycle ----------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> int:
        """Bind, start the HTTP and writer threads; returns the bound port."""
        if self.prices is None:
            from loopmeter.telemetry.pricing import default_price_table

            self.prices = default_price_table()
        server_cls = _IPv6Server if ":" in self.host else _Server
        try:
            self._httpd = server_cls((self.host, self.port), _handler(self))
        except OSError as exc:
            raise LoopmeterError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="another collector may be running there; pick another --port (0 = any free port)",
            ) from exc
        self.port = int(self._httpd.server_address[1])
        self._accepting = True
        self._writer = threading.Thread(target=self._write_loop, name="otlp-writer", daemon=True)
        self._writer.start()
        self._http_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="otlp-http", daemon=True)
        self._http_thread.start()
        return self.port

    def stop(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Stop accepting, flush everything accepted, return the final stats.

        If the store still refuses writes after `timeout` seconds, what is left is
        written to a JSONL file (path in `self.unsaved`) rather than lost.
        """
        with self._inflight_cond:  # requests already past the door finish queueing first
            self._accepting = False
            self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout=30)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout)
            if self._writer.is_alive():
                self._give_up.set()
                self._writer.join()
        return self.stats.snapshot()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the HTTP side -------------------------------------------------------
    def accept(self, signal: str, body: bytes, content_type: str) -> Decoded:
        """Decode one request and queue what it holds. Raises PayloadError or _Overloaded."""
        with self._inflight_cond:
            if not self._accepting:
                raise _Overloaded()
            self._inflight += 1
        try:
            decoded = decode(signal, body, content_type, self.prices)
            batch = _Batch(decoded.usage, decoded.spans)
            if batch:
                with self._inflight_cond:
                    full = self._pending_rows > 0 and self._pending_rows + len(batch) > self.max_pending_rows
                    if not full:
                        try:
                            self._queue.put_nowait(batch)
                            self._pending_rows += len(batch)
                        except queue.Full:
                            full = True
                if full:
                    self.stats.add(overloaded=1)
                    raise _Overloaded()
        finally:
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()
        self.stats.add(
            requests=1,
            log_records=decoded.records if signal == "logs" else 0,
            metric_points=decoded.records if signal == "metrics" else 0,
            spans_received=decoded.records if signal == "traces" else 0,
            usage_accepted=len(decoded.usage),
            rejected_records=decoded.rejected,
        )
        self.stats.add_events(decoded.events)
        return decoded

    # -- the writer ------------------------------------------------------------
    def _write_loop(self) -> None:
        next_summary = time.monotonic() + (self.summary_every_s or 0)
        last = self.stats.snapshot()
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                first = _Batch()
            if first is None:
                stopping = True
                first = _Batch()
            usage, spans = list(first.usage), list(first.spans)
            while len(usage) + len(spans) < self.batch_rows:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    continue
                usage.extend(more.usage)
                spans.extend(more.spans)
            if usage or spans:
                self._write(usage, spans)
                with self._inflight_cond:
                    self._pending_rows -= len(usage) + len(spans)
            if self.summary_every_s and time.monotonic() >= next_summary:
                last = self._summary(last)
                next_summary = time.monotonic() + self.summary_every_s

    def _write(self, usage: list[UsageRow], spans: list[dict[str, Any]]) -> None:
        unique = list({row.key: row for row in usage}.values())
        usage_pending = bool(usage)
        delay = 0.1
        while usage_pending or spans:
            try:
                if usage_pending:
                    new = self.store.add_usage(unique)
                    self.stats.add(usage_new=new, usage_duplicate=len(usage) - new)
                    usage_pending = False
                if spans:
                    self.stats.add(spans_stored=self.store.add_spans(spans))
                    spans = []
            except Exception as exc:  # keep what was accepted: retry until the store takes it
                self.stats.add(write_errors=1)
                self.log(f"collect: store write failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                         f"retrying in {delay:.1f}s")
                if self._give_up.wait(delay):
                    self._spill(unique if usage_pending else [], spans)
                    return
                delay = min(delay * 2, 5.0)

    def _spill(self, usage: list[UsageRow], spans: list[dict[str, Any]]) -> None:
        folder = self.spill_dir or Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"collect-unsaved-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.jsonl"
        with path.open("a", encoding="utf-8") as fh:
            for row in usage:
                fh.write(json.dumps({"usage": row.as_dict()}, default=str) + "\n")
            for span in spans:
                fh.write(json.dumps({"span": span}, default=str) + "\n")
        self.unsaved = path
        self.log(f"collect: the store did not take {len(usage)} usage rows and {len(spans)} spans; saved to {path}")

    def _summary(self, last: dict[str, Any]) -> dict[str, Any]:
        now = self.stats.snapshot()
        d = {k: now[k] - last[k] for k in ReceiverStats.KEYS}
        if not any(d.values()):
            return now  # quiet while nothing arrives
        line = (f"collect {datetime.now():%H:%M}: {d['requests']} requests, {d['log_records']} log records, "
                f"{d['usage_new']} new usage rows ({d['usage_duplicate']} already known), "
                f"{d['spans_stored']} spans, {d['metric_points']} metric points")
        extra = [f"{d[k]} {k.replace('_', ' ')}" for k in ("bad_requests", "overloaded", "rejected_records",
                                                           "write_errors") if d[k]]
        self.log(line + (", " + ", ".join(extra) if extra else ""))
        return now


# -- HTTP plumbing -----------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(_OtlpHandler):
        pass

    Handler.receiver = receiver
    return Handler


class _OtlpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for a delayed ACK
    timeout = 60
    receiver: Receiver
    server_version = "loopmeter-collect"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._reply(405, "text/plain", b"POST OTLP export requests to /v1/logs, /v1/metrics or /v1/traces\n",
                    {"Allow": "POST"})

    def do_POST(self) -> None:  # noqa: N802
        content_type = self.headers.get("Content-Type") or "application/x-protobuf"
        media = content_type.split(";", 1)[0].strip().lower()
        is_json = media == "application/json"
        signal = PATHS.get(self.path.split("?", 1)[0].rstrip("/"))
        try:
            body = self._read_body()  # always drain the body, so the connection stays usable
            if signal is None:
                raise _HttpError(404, f"unknown path {self.path}; use /v1/logs, /v1/metrics or /v1/traces")
            if media not in MEDIA_TYPES:
                raise _HttpError(415, f"unsupported Content-Type {media!r}; use application/x-protobuf or "
                                      "application/json")
            body = self._decompress(body)
            decoded = self.receiver.accept(signal, body, content_type)
        except _HttpError as exc:
            self.receiver.stats.add(bad_requests=1)
            self._status(exc.status, exc.message, is_json)
            return
        except PayloadError as exc:
            self.receiver.stats.add(bad_requests=1)
            self._status(400, str(exc), is_json)
            return
        except _Overloaded:
            self._status(503, "the collector is busy writing; retry later", is_json,
                         {"Retry-After": str(RETRY_AFTER_S)})
            return
        self._success(signal, decoded, is_json)

    # -- body ----------------------------------------------------------------
    def _read_body(self) -> bytes:
        limit = self.receiver.max_body
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise _HttpError(400, f"bad Content-Length {length_header!r}") from None
        if length > limit:
            # Read a moderately oversized body so the client sees the 413; hang up on a huge one.
            if length <= DRAIN_FACTOR * limit:
                self._discard(length)
            else:
                self.close_connection = True
            raise _HttpError(413, f"body of {length} bytes is over the {limit}-byte limit")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise _HttpError(400, "body ended before Content-Length bytes")
        return body

    def _discard(self, n: int) -> None:
        while n > 0:
            got = self.rfile.read(min(n, 65536))
            if not got:
                self.close_connection = True
                return
            n -= len(got)

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _HttpError(400, f"bad chunk size line {line[:40]!r}") from None
            if n == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                if size > limit:
                    raise _HttpError(413, f"body is over the {limit}-byte limit")
                return b"".join(parts)
            size += n
            if size > DRAIN_FACTOR * limit:
                self.close_connection = True
                raise _HttpError(413, f"body is over the {limit}-byte limit")
            if size > limit:
                parts.clear()
                self._discard(n)
            else:
                parts.append(self.rfile.read(n))
            self.rfile.readline(8)  # the CRLF after each chunk

    def _decompress(self, body: bytes) -> bytes:
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("identity", ""):
            return body
        if encoding not in ("gzip", "deflate"):
            raise _HttpError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, self.receiver.max_body + 1)
        except zlib.error as exc:
            raise _HttpError(400, f"body is not valid {encoding}: {exc}") from None
        if len(out) > self.receiver.max_body or inflater.unconsumed_tail:
            raise _HttpError(413, f"decompressed body is over the {self.receiver.max_body}-byte limit")
        return out

    # -- responses -------------------------------------------------------------
    def _reply(self, status: int, content_type: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _status(self, status: int, message: str, is_json: bool, headers: dict[str, str] | None = None) -> None:
        """An error as OTLP asks: a google.rpc.Status in the request's encoding."""
        code = {400: 3, 404: 5, 413: 8, 415: 3, 503: 14}.get(status, 2)
        if is_json:
            self._reply(status, "application/json", json.dumps({"code": code, "message": message}).encode(), headers)
            return
        try:
            from google.rpc.status_pb2 import Status

            payload = Status(code=code, message=message).SerializeToString()
        except ImportError:  # googleapis-common-protos comes with the OTLP exporter; plain text otherwise
            self._reply(status, "text/plain; charset=utf-8", message.encode(), headers)
            return
        self._reply(status, "application/x-protobuf", payload, headers)

    def _success(self, signal: str, decoded: Decoded, is_json: bool) -> None:
        rejected_field = {"logs": "rejected_log_records", "traces": "rejected_spans",
                          "metrics": "rejected_data_points"}[signal]
        message = "; ".join(decoded.errors)
        if is_json:
            doc: dict[str, Any] = {}
            if decoded.rejected:
                camel = "".join(w if i == 0 else w.title() for i, w in enumerate(rejected_field.split("_")))
                doc["partialSuccess"] = {camel: str(decoded.rejected), "errorMessage": message}
            self._reply(200, "application/json", json.dumps(doc).encode())
            return
        payload = b""
        if decoded.rejected:
            payload = _partial_success_pb(signal, rejected_field, decoded.rejected, message)
        self._reply(200, "application/x-protobuf", payload)


def _partial_success_pb(signal: str, rejected_field: str, rejected: int, message: str) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response_cls: Any = {"logs": ExportLogsServiceResponse, "traces": ExportTraceServiceResponse,
                         "metrics": ExportMetricsServiceResponse}[signal]
    resp = response_cls()
    setattr(resp.partial_success, rejected_field, rejected)
    resp.partial_success.error_message = message
    return bytes(resp.SerializeToString())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
