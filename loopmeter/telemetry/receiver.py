"""OTLP/HTTP receiver: agents' logs, metrics and traces -> usage rows and spans.

HTTP is served by aiohttp (its C parser frames requests, chunked bodies included) on
one event-loop thread. A request's body is read there, then decoded on one of
`max_decodes` threads and queued; one writer thread takes batches off the queue and
inserts them. A request is answered 200 only once what it holds is on the queue.

Memory is bounded by one budget (`memory_budget` bytes) that every request draws on:
its body as it arrives, its decompressed body, an estimate of what decoding builds, and
the rows it queued until they are written. A body over `max_body` bytes, or one that
decodes to more than `max_values` values or more than the whole budget, is answered
413; when the budget, the decode slots or the queue are full for `wait_s` seconds the
answer is 503 with Retry-After (exporters retry), so nothing accepted is dropped.

A record the store will not take (a string it cannot encode, a number out of range) is
found by bisecting the batch it came in, set aside in `collect-dead-letter.jsonl`
under LOOPMETER_HOME, counted and logged; the rest of the batch is stored. When the
store itself fails (locked, down, its table missing) the writer retries with back-off.
`stop()` stops accepting, then flushes everything accepted.

    receiver = Receiver(store, port=0)
    port = receiver.start()
    ...
    receiver.stop()
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.errors import LoopmeterError
from loopmeter.records import UsageRow
from loopmeter.telemetry.ingest.otlp import Decoded, PayloadError, count_values, decode

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
PATHS = {"/v1/logs": "logs", "/v1/metrics": "metrics", "/v1/traces": "traces"}
MAX_BODY = 64 * 1024 * 1024  # bytes per request, as received and after decompression
MAX_VALUES = 1_000_000  # values one request may decode to (records, attributes, their values)
MEMORY_BUDGET = 256 * 1024 * 1024  # bytes held for requests at once: bodies, decoding, rows waiting
MAX_DECODES = 2  # requests decoding at once (decoding holds the GIL: more would not go faster)
WAIT_S = 2.0  # how long a request waits for a decode slot, or for memory, before the 503
DRAIN_FACTOR = 4  # an oversized body up to this many times the limit is read, so the client gets the 413
RETRY_AFTER_S = 2
MEDIA_TYPES = ("application/x-protobuf", "application/protobuf", "application/json")
DEAD_LETTER_FILE = "collect-dead-letter.jsonl"

# What decoding builds per value, with a margin over what tracemalloc showed for real requests.
JSON_VALUE_BYTES = 100
PROTO_MESSAGE_BYTES = 160
ROW_BYTES = 800  # a UsageRow or span dict waiting for the writer, besides its attribute text
SCAN_FROM = 128 * 1024  # smaller protobuf bodies are not walked: each message takes at least 2 bytes
INFLATE_STEP = 1 << 20
# The writer gathers requests this long before a transaction: fewer, larger commits, and
# the thread that queued a request answers it before the writer takes the interpreter.
BATCH_LINGER_S = 0.005


class _Overloaded(Exception):
    """Answered 503 with Retry-After; the message says what was full."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str, *, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


class _Budget:
    """Bytes that requests may hold at once (thread-safe)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.waiting = 0  # requests waiting for memory
        self._cond = threading.Condition()

    def try_take(self, n: int) -> bool:
        with self._cond:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def take(self, n: int, timeout: float) -> bool:
        """Take `n` bytes, waiting up to `timeout` seconds for other requests and the writer to give some back."""
        with self._cond:
            self.waiting += 1
            try:
                if not self._cond.wait_for(lambda: self.used + n <= self.limit, timeout):
                    return False
            finally:
                self.waiting -= 1
            self.used += n
            return True

    def give(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class _Held:
    """What one request holds of the budget; `release()` gives all of it back."""

    def __init__(self, budget: _Budget):
        self.budget = budget
        self.amount = 0

    def try_take(self, n: int) -> bool:
        if self.budget.try_take(n):
            self.amount += n
            return True
        return False

    def take(self, n: int, timeout: float) -> bool:
        if n > self.budget.limit - self.amount:
            raise _HttpError(413, f"decoding this body would take about {(self.amount + n) >> 20} MiB, over the "
                                  f"collector's {self.budget.limit >> 20} MiB memory budget; send smaller batches")
        if self.budget.take(n, timeout):
            self.amount += n
            return True
        return False

    def give(self, n: int) -> None:
        n = min(n, self.amount)
        self.amount -= n
        self.budget.give(n)

    def keep(self, n: int) -> None:
        """Hold exactly `n` bytes: give back the rest, or take what is missing (_Overloaded if it cannot)."""
        if n <= self.amount:
            self.give(self.amount - n)
        elif not self.try_take(n - self.amount):
            raise _Overloaded(f"its {self.budget.limit >> 20} MiB memory budget is in use")

    def hand_over(self, n: int) -> None:
        """`n` of the bytes held now belong to rows on the writer's queue, which gives them back."""
        self.amount -= n

    def release(self) -> None:
        self.give(self.amount)


@dataclass
class _Batch:
    usage: list[UsageRow] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    cost: int = 0  # bytes of the memory budget these rows hold until written

    def __len__(self) -> int:
        return len(self.usage) + len(self.spans)


@dataclass
class _Job:
    """One request between its body being read and its rows being queued."""

    signal: str
    content_type: str
    encoding: str
    body: bytearray | bytes | None
    held: _Held


class ReceiverStats:
    """Counters since start (thread-safe). `snapshot()` gives a dict with stable keys."""

    KEYS = ("requests", "bad_requests", "overloaded", "log_records", "metric_points", "spans_received",
            "usage_accepted", "usage_new", "usage_duplicate", "spans_stored", "rejected_records", "write_errors",
            "dead_lettered")

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
        max_values: int = MAX_VALUES,
        memory_budget: int = MEMORY_BUDGET,
        max_decodes: int = MAX_DECODES,
        slot_wait_s: float = WAIT_S,
        memory_wait_s: float = WAIT_S,
        prices: Any = None,
        log: Callable[[str], None] | None = None,
        summary_every_s: float | None = None,
        spill_dir: Path | None = None,
    ):
        self.store = store
        self.host = host
        self.port = port
        self.max_body = max_body
        self.max_values = max_values
        self.max_decodes = max_decodes
        self.slot_wait_s = slot_wait_s
        self.memory_wait_s = memory_wait_s
        self.batch_rows = batch_rows
        self.prices = prices
        self.log = log or (lambda line: None)
        self.summary_every_s = summary_every_s
        self.spill_dir = spill_dir
        self.stats = ReceiverStats()
        self.budget = _Budget(memory_budget)
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=queue_size)
        self.max_pending_rows = max_pending_rows
        self._pending_rows = 0  # accepted, not yet written: bounds the queue by rows as well as requests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._http_thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._give_up = threading.Event()
        self._accepting = False
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._dead_log_at = 0.0
        self._dead_unlogged = 0
        self.unsaved: Path | None = None

    # -- life cycle ----------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def dead_letter_path(self) -> Path:
        if self.spill_dir is None:
            from loopmeter.config import default_home

            return default_home() / DEAD_LETTER_FILE
        return self.spill_dir / DEAD_LETTER_FILE

    def start(self) -> int:
        """Bind, start the HTTP, decode and writer threads; returns the bound port."""
        import aiohttp.web  # noqa: F401 - loaded before the socket listens, not while clients wait

        if self.prices is None:
            from loopmeter.telemetry.pricing import default_price_table

            self.prices = default_price_table()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise LoopmeterError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="another collector may be running there; pick another --port (0 = any free port)",
            ) from exc
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        self._pool = ThreadPoolExecutor(max_workers=self.max_decodes, thread_name_prefix="otlp-decode")
        self._loop = asyncio.new_event_loop()
        self._http_thread = threading.Thread(target=self._loop.run_forever, name="otlp-http", daemon=True)
        self._http_thread.start()
        self._writer = threading.Thread(target=self._write_loop, name="otlp-writer", daemon=True)
        self._writer.start()
        self._accepting = True  # before serving: a client may connect as soon as the socket listens
        try:
            asyncio.run_coroutine_threadsafe(self._serve(sock), self._loop).result(timeout=60)
        except BaseException:
            sock.close()
            self.stop()
            raise
        return self.port

    async def _serve(self, sock: socket.socket) -> None:
        from aiohttp import web

        quiet = logging.getLogger("loopmeter.collect.http")  # aiohttp's own messages: not on stderr
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self._slots = asyncio.Semaphore(self.max_decodes)
        server = web.Server(self._handle, access_log=None, logger=quiet, auto_decompress=False,
                            keepalive_timeout=75, lingering_time=10)
        self._runner = web.ServerRunner(server, shutdown_timeout=5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def _close_loop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            except Exception as exc:  # closing is best effort: the writer still flushes
                self.log(f"collect: closing the HTTP server: {type(exc).__name__}")
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._http_thread is not None:
            self._http_thread.join(30)
        if not self._loop.is_running():
            self._loop.close()
        self._loop = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def stop(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Stop accepting, flush everything accepted, return the final stats.

        If the store still refuses writes after `timeout` seconds, what is left is
        written to a JSONL file (path in `self.unsaved`) rather than lost.
        """
        with self._inflight_cond:  # requests already past the door finish queueing first
            self._accepting = False
            self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout=30)
        self._close_loop()
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout)
            if self._writer.is_alive():
                self._give_up.set()
                self._writer.join()
        if self._dead_unlogged:
            self.log(f"collect: {self._dead_unlogged} more records were set aside in {self.dead_letter_path}")
            self._dead_unlogged = 0
        return self.stats.snapshot()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the HTTP side (event-loop thread) -------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type") or "application/x-protobuf"
        media = content_type.split(";", 1)[0].strip().lower()
        is_json = media == "application/json"
        if request.method != "POST":
            return _reply(405, "text/plain", b"POST OTLP export requests to /v1/logs, /v1/metrics or /v1/traces\n",
                          {"Allow": "POST"})
        with self._inflight_cond:
            accepting = self._accepting
            if accepting:
                self._inflight += 1
        if not accepting:
            self.stats.add(overloaded=1)
            return _status(503, "the collector is stopping; retry later", is_json, {"Retry-After": str(RETRY_AFTER_S)})
        held = _Held(self.budget)
        try:
            decoded, signal = await self._receive(request, content_type, media, held)
        except _HttpError as exc:
            self.stats.add(bad_requests=1)
            return _status(exc.status, exc.message, is_json, close=exc.close)
        except PayloadError as exc:
            self.stats.add(bad_requests=1)
            return _status(400, str(exc), is_json)
        except _Overloaded as exc:
            self.stats.add(overloaded=1)
            return _status(503, f"the collector is busy ({exc}); retry later", is_json,
                           {"Retry-After": str(RETRY_AFTER_S)})
        except Exception as exc:  # a bug of ours: answer, log one line, keep serving
            self.log(f"collect: a request failed ({_reason(exc)})")
            return _status(500, "the collector failed on this request", is_json)
        finally:
            held.release()
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()
        return _success(signal, decoded, is_json)

    async def _receive(self, request: web.BaseRequest, content_type: str, media: str,
                       held: _Held) -> tuple[Decoded, str]:
        from aiohttp.web import RequestPayloadError

        signal = PATHS.get(request.path.rstrip("/"))
        if signal is None:
            raise _HttpError(404, f"unknown path {request.path[:200]}; use /v1/logs, /v1/metrics or /v1/traces")
        if media not in MEDIA_TYPES:
            raise _HttpError(415, f"unsupported Content-Type {media[:100]!r}; use application/x-protobuf or "
                                  "application/json")
        encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "deflate"):
            raise _HttpError(415, f"unsupported Content-Encoding {encoding[:100]!r}; use gzip or none")
        length = request.content_length
        if length is not None and length > self.max_body:
            # a moderately oversized body is read (and dropped) so the client sees the 413; a huge one is cut off
            raise _HttpError(413, f"body of {length} bytes is over the {self.max_body}-byte limit",
                             close=length > DRAIN_FACTOR * self.max_body)
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits 1 s for it otherwise
        body = bytearray()
        try:
            async for chunk in request.content.iter_any():
                if len(body) + len(chunk) > self.max_body:
                    raise _HttpError(413, f"body is over the {self.max_body}-byte limit")
                if not held.try_take(len(chunk)):
                    raise _Overloaded(self._memory_full())
                body += chunk
        except RequestPayloadError as exc:
            raise _HttpError(400, f"bad request body: {exc}", close=True) from None
        assert self._slots is not None and self._loop is not None
        if self._slots.locked() and self.slot_wait_s <= 0:
            raise _Overloaded(f"all {self.max_decodes} decode slots are busy")
        try:
            await asyncio.wait_for(self._slots.acquire(), max(self.slot_wait_s, 0.001))
        except TimeoutError:
            raise _Overloaded(f"all {self.max_decodes} decode slots are busy") from None
        try:
            job = _Job(signal, content_type, encoding, body, held)
            del body
            return await self._loop.run_in_executor(self._pool, self._accept, job), signal
        finally:
            self._slots.release()

    def _memory_full(self) -> str:
        return f"its {self.budget.limit >> 20} MiB memory budget is in use"

    # -- decoding (a decode thread) --------------------------------------------
    def _accept(self, job: _Job) -> Decoded:
        """Decompress, size up, decode and queue one request. Raises _HttpError, PayloadError or _Overloaded."""
        text = self._inflate(job)
        media = job.content_type.split(";", 1)[0].strip().lower()
        if media == "application/json":
            values = count_values(job.signal, text, job.content_type, self.max_values)
            chars = len(text) if text.isascii() else 4 * len(text)  # the text as str, then its strings
            cost = 2 * chars + values * JSON_VALUE_BYTES
        else:
            values = len(text) // 2 + 1  # a message takes at least a tag and a length
            if len(text) > SCAN_FROM:
                values = count_values(job.signal, text, job.content_type, self.max_values)
            cost = len(text) + values * PROTO_MESSAGE_BYTES
        if values > self.max_values:
            raise _HttpError(413, f"body holds more than {self.max_values} values (records, attributes and their "
                                  "values); send smaller batches")
        if not job.held.take(cost, self.memory_wait_s):
            raise _Overloaded(self._memory_full())
        decoded = decode(job.signal, text, job.content_type, self.prices)
        del text
        batch = _Batch(decoded.usage, decoded.spans)
        batch.cost = len(batch) * ROW_BYTES + sum(len(s["attributes"]) for s in batch.spans)
        job.held.keep(batch.cost)  # what decoding built is gone but for the rows
        if batch:
            with self._inflight_cond:
                full = self._pending_rows > 0 and self._pending_rows + len(batch) > self.max_pending_rows
                if not full:
                    try:
                        self._queue.put_nowait(batch)
                        self._pending_rows += len(batch)
                        job.held.hand_over(batch.cost)
                    except queue.Full:
                        full = True
            if full:
                raise _Overloaded("the queue of rows waiting for the store is full")
        self.stats.add(
            requests=1,
            log_records=decoded.records if job.signal == "logs" else 0,
            metric_points=decoded.records if job.signal == "metrics" else 0,
            spans_received=decoded.records if job.signal == "traces" else 0,
            usage_accepted=len(decoded.usage),
            rejected_records=decoded.rejected,
        )
        self.stats.add_events(decoded.events)
        decoded.usage, decoded.spans = [], []  # the queue has them; the answer needs only the counts
        return decoded

    def _inflate(self, job: _Job) -> bytearray | bytes:
        """The body decompressed (the compressed one dropped), its bytes taken from the budget as they come."""
        body, job.body = job.body, None
        assert body is not None
        if job.encoding in ("identity", ""):
            return body
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if job.encoding == "gzip" else zlib.MAX_WBITS)
        out = bytearray()

        def add(chunk: bytes) -> None:
            if len(out) + len(chunk) > self.max_body:
                raise _HttpError(413, f"decompressed body is over the {self.max_body}-byte limit")
            if not job.held.take(len(chunk), self.memory_wait_s):
                raise _Overloaded(self._memory_full())
            out.extend(chunk)

        try:
            view = memoryview(body)
            for start in range(0, len(body), 1 << 16):  # in pieces: unconsumed input is copied each call
                piece: bytes | memoryview = view[start:start + (1 << 16)]
                while piece and not inflater.eof:
                    add(inflater.decompress(piece, INFLATE_STEP))
                    piece = inflater.unconsumed_tail
                if inflater.eof:
                    break
            add(inflater.flush())
        except zlib.error as exc:
            raise _HttpError(400, f"body is not valid {job.encoding}: {exc}") from None
        if not inflater.eof:
            raise _HttpError(400, f"{job.encoding} body ends before its end of stream")
        job.held.give(len(body))
        return out

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
            usage, spans, cost = list(first.usage), list(first.spans), first.cost
            linger_until = time.monotonic() + (BATCH_LINGER_S if first else 0)
            while len(usage) + len(spans) < self.batch_rows:
                wait = linger_until - time.monotonic()
                try:
                    more = self._queue.get(timeout=wait) if wait > 0 and not stopping else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    continue
                usage.extend(more.usage)
                spans.extend(more.spans)
                cost += more.cost
            if usage or spans:
                self._write(usage, spans)
                with self._inflight_cond:
                    self._pending_rows -= len(usage) + len(spans)
            self.budget.give(cost)
            if self.summary_every_s and time.monotonic() >= next_summary:
                last = self._summary(last)
                next_summary = time.monotonic() + self.summary_every_s

    def _write(self, usage: list[UsageRow], spans: list[dict[str, Any]]) -> None:
        unique = list({row.key: row for row in usage}.values())
        left_usage: list[UsageRow] = []
        left_spans: list[dict[str, Any]] = []
        if unique:
            new, dead, left_usage = self._store_rows("usage", unique)
            self.stats.add(usage_new=new, usage_duplicate=len(usage) - new - dead - len(left_usage))
        if spans and not left_usage:
            stored, _dead, left_spans = self._store_rows("span", spans)
            self.stats.add(spans_stored=stored)
        elif spans:
            left_spans = spans
        if left_usage or left_spans:
            self._spill(left_usage, left_spans)

    def _store_rows(self, kind: str, rows: list[Any]) -> tuple[int, int, list[Any]]:
        """Write rows; returns (new, set aside, left unwritten because stop gave up).

        When the store refuses a batch because of what is in it, the batch is split in
        halves until the records it will not take are found; each is set aside in the
        dead-letter file and the others are stored. When it fails for a reason of its own
        (locked, down, no table) the same rows are retried with back-off."""
        write = self.store.add_usage if kind == "usage" else self.store.add_spans
        todo = [rows]
        new = dead = 0
        delay = 0.1
        while todo:
            part = todo.pop()
            try:
                new += write(part)
                delay = 0.1
                continue
            except Exception as exc:
                error: BaseException = exc
            if not _store_wide(error) and self._store_answers(kind):
                if len(part) > 1:
                    half = len(part) // 2
                    todo += [part[half:], part[:half]]
                    continue
                try:
                    self._dead_letter(kind, part[0], error)
                    dead += 1
                    continue
                except OSError as exc:  # the record stays until it can be set aside
                    error = exc
            self.stats.add(write_errors=1)
            self.log(f"collect: store write failed ({_reason(error)}); retrying in {delay:.1f}s")
            if self._give_up.wait(delay):
                return new, dead, [r for p in todo for r in p] + part
            todo.append(part)
            delay = min(delay * 2, 5.0)
        return new, dead, []

    def _store_answers(self, kind: str) -> bool:
        """Whether the store is up and has the table: a refused record is then the record's fault."""
        try:
            with self.store.engine.connect() as conn:
                conn.exec_driver_sql(f"SELECT 1 FROM {'usage' if kind == 'usage' else 'span'} WHERE 1 = 0")
            return True
        except Exception:
            return False

    def _dead_letter(self, kind: str, record: Any, error: BaseException) -> None:
        path = self.dead_letter_path
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"time": datetime.now(UTC).isoformat(), "kind": kind, "reason": _reason(error),
                 "record": record.as_dict() if isinstance(record, UsageRow) else record}
        line = json.dumps(entry, default=str, ensure_ascii=True) + "\n"  # a lone surrogate becomes \ud800
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("ascii"))
        finally:
            os.close(fd)
        self.stats.add(dead_lettered=1)
        now = time.monotonic()
        if now - self._dead_log_at >= 10:  # one line per record, at most one each 10 s under a flood
            more = f" (and {self._dead_unlogged} more since the last such line)" if self._dead_unlogged else ""
            self.log(f"collect: the store refused a {kind} record ({_reason(error)}); set aside in {path}{more}")
            self._dead_log_at, self._dead_unlogged = now, 0
        else:
            self._dead_unlogged += 1

    def _spill(self, usage: list[UsageRow], spans: list[dict[str, Any]]) -> None:
        folder = self.spill_dir or Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"collect-unsaved-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.jsonl"
        with path.open("a", encoding="ascii") as fh:
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
                                                           "write_errors", "dead_lettered") if d[k]]
        self.log(line + (", " + ", ".join(extra) if extra else ""))
        return now


def _store_wide(exc: BaseException) -> bool:
    """Whether a failed write is the store's problem (locked, down, full, gone) rather than a record's."""
    err = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    names = {t.__name__ for t in type(err).__mro__} | {t.__name__ for t in type(exc).__mro__}
    if names & {"OperationalError", "InterfaceError", "InternalError", "DisconnectionError", "TimeoutError"}:
        return True
    return isinstance(err, OSError | MemoryError)


def _reason(exc: BaseException) -> str:
    """The error's type and first line, short and printable (a lone surrogate shows as \\ud800)."""
    err = getattr(exc, "orig", None) or exc
    text = (str(err).splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {text}".encode("ascii", "backslashreplace").decode("ascii")


# -- responses -----------------------------------------------------------------


def _reply(status: int, content_type: str, payload: bytes, headers: dict[str, str] | None = None,
           close: bool = False) -> web.Response:
    from aiohttp import web

    resp = web.Response(status=status, body=payload, headers={"Content-Type": content_type, **(headers or {})})
    if close:
        resp.force_close()
    return resp


def _status(status: int, message: str, is_json: bool, headers: dict[str, str] | None = None,
            close: bool = False) -> web.Response:
    """An error as OTLP asks: a google.rpc.Status in the request's encoding."""
    code = {400: 3, 404: 5, 413: 8, 415: 3, 503: 14}.get(status, 2)
    if is_json:
        return _reply(status, "application/json", json.dumps({"code": code, "message": message}).encode(), headers,
                      close)
    try:
        from google.rpc.status_pb2 import Status

        payload = Status(code=code, message=message).SerializeToString()
    except ImportError:  # googleapis-common-protos comes with the OTLP exporter; plain text otherwise
        return _reply(status, "text/plain; charset=utf-8", message.encode(), headers, close)
    return _reply(status, "application/x-protobuf", payload, headers, close)


def _success(signal: str, decoded: Decoded, is_json: bool) -> web.Response:
    rejected_field = {"logs": "rejected_log_records", "traces": "rejected_spans",
                      "metrics": "rejected_data_points"}[signal]
    message = "; ".join(decoded.errors)
    if is_json:
        doc: dict[str, Any] = {}
        if decoded.rejected:
            camel = "".join(w if i == 0 else w.title() for i, w in enumerate(rejected_field.split("_")))
            doc["partialSuccess"] = {camel: str(decoded.rejected), "errorMessage": message}
        return _reply(200, "application/json", json.dumps(doc).encode())
    payload = b""
    if decoded.rejected:
        payload = _partial_success_pb(signal, rejected_field, decoded.rejected, message)
    return _reply(200, "application/x-protobuf", payload)


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
