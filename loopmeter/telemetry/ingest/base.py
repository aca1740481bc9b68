"""What every log source shares: the per-file parse context and a bounded line reader.

A source module (claude_code, codex, gemini) provides `roots(env)` (where its logs
live), `files(root)` (its log files under a root) and `parse(lines, ctx)` (usage rows
from candidate lines). The runner (runner.py) decides which bytes of which file to
read, and only `loopmeter.store` writes what the parsers return.

Parsers yield rows as `records.UsageParams` (made by `usage_params`: a named tuple in
USAGE_FIELDS order, the time as the store's text), not UsageRow objects: a GB of logs
holds ~150k calls, and building an object per call and converting it again cost a third
of a worker's time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import msgspec

from loopmeter.records import UsageParams
from loopmeter.store.sqlite_writer import sqlite_time
from loopmeter.telemetry.costs import price_call
from loopmeter.telemetry.tokens import MAX_TOKENS, Counts

# msgspec decodes the candidate lines: generic decoding is as fast as orjson's, and a
# source's typed decoder (msgspec.Struct) skips the fields it does not name without
# building them, which halves the time of a Claude Code assistant line.
JSON_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, ValueError)
loads = msgspec.json.decode
STRUCT_ERRORS = (msgspec.DecodeError,)  # ValidationError is a DecodeError

CHUNK_BYTES = 4 << 20
# A longer line is streamed past without being kept (Claude Code writes user lines of
# hundreds of MB); one that could carry usage is counted as malformed.
MAX_LINE_BYTES = 16 << 20


@dataclass(slots=True)
class SessionSeen:
    """Where one session worked, as far as the calls read in this batch tell (the latest
    call's place wins); stored once per session (loopmeter.store.sessions merges batches)."""

    source: str
    session_id: str
    agent: str | None
    user: str | None
    first_ts: str  # the store's UTC text
    last_ts: str
    cwd: str | None = None
    branch: str | None = None
    commit: str | None = None
    url: str | None = None  # the repository URL the log names (Codex), as written there


@dataclass
class FileContext:
    """One file being read: where it is, what the parser carries between reads."""

    path: Path
    source: str  # the usage row `source`, e.g. "claude-code-log"
    agent: str | None = None  # the rows' agent and provider (the Source's)
    provider: str | None = None
    state: dict[str, Any] = field(default_factory=dict)  # saved in ingest_cursor.state
    malformed: int = 0
    price_table: Any = None  # loopmeter.telemetry.pricing.PriceTable, or None for no pricing
    user: str | None = None  # whose logs these are (the file's owner), set on every row
    seen: set[str] = field(default_factory=set)  # keys yielded in this read (repeated lines)
    sessions: dict[str, SessionSeen] = field(default_factory=dict)  # by session id, since the last batch

    def bad_line(self) -> None:
        self.malformed += 1

    def saw(self, session_id: str, ts: str, cwd: str | None, branch: str | None, commit: str | None = None,
            url: str | None = None) -> None:
        """Note a call of `session_id` at `ts` (the store's text), made in `cwd` on `branch`."""
        s = self.sessions.get(session_id)
        if s is None:
            self.sessions[session_id] = SessionSeen(self.source, session_id, self.agent, self.user, ts, ts, cwd,
                                                    branch, commit, url)
        elif ts >= s.last_ts:
            s.last_ts = ts
            if cwd is not None:
                s.cwd = cwd
            if branch is not None:
                s.branch = branch
            if commit is not None:
                s.commit = commit
            if url is not None:
                s.url = url
        elif ts < s.first_ts:
            s.first_ts = ts


@dataclass
class Source:
    """A kind of agent log."""

    name: str  # claude-code, codex, gemini (the `--source` value)
    tag: str  # usage row source, e.g. claude-code-log
    agent: str  # usage row agent, e.g. claude-code
    provider: str  # usage row provider, e.g. anthropic
    roots: Callable[[dict[str, str]], list[Path]]
    files: Callable[[Path], Iterator[Path]]
    # UsageParams rows from candidate lines (bytes or memoryview, each valid until the next)
    parse: Callable[[Iterable[bytes | memoryview], FileContext], Iterator[UsageParams]]
    markers: tuple[bytes, ...]  # a line that can matter contains one of these
    splittable: bool = False  # lines are independent: a big file may be read in byte ranges
    whole_file_suffix: str | None = None  # such files are one JSON document, re-read whole when changed

    def is_whole_file(self, path: Path) -> bool:
        return self.whole_file_suffix is not None and path.name.endswith(self.whole_file_suffix)


@dataclass
class ReadStats:
    """What a read of one byte range found."""

    end: int  # offset just past the last complete line read (so far, while reading)
    oversized_candidates: int = 0  # lines too long to keep that could have carried usage


def _has_marker(data: bytes, markers: tuple[bytes, ...]) -> bool:
    return any(m in data for m in markers)


@functools.lru_cache(maxsize=16)
def _marker_pattern(markers: tuple[bytes, ...]) -> re.Pattern[bytes]:
    # One pattern for all markers: re's literal-prefix search walks the bytes once, where
    # one bytes.find per marker walked them once per marker (measured 0.33 against 0.77 s/GB
    # for Codex's three markers, and 0.28 against 0.47 s/GB for Claude Code's one).
    if len(markers) == 1:
        return re.compile(re.escape(markers[0]))
    prefix = markers[0]
    for m in markers[1:]:
        while not m.startswith(prefix):
            prefix = prefix[:-1]
    rest = b"|".join(re.escape(m[len(prefix):]) for m in markers)
    return re.compile(re.escape(prefix) + b"(?:" + rest + b")")


def _scan(data: bytearray, view: memoryview, start: int, limit: int, markers: tuple[bytes, ...], base: int,
          stats: ReadStats) -> Iterator[memoryview]:
    """Lines of data[start:limit] (complete lines) holding a marker, as views into `data`;
    `base` is data[0]'s file offset."""
    search = _marker_pattern(markers).search
    rfind, find = data.rfind, data.find
    hit = search(data, start, limit)
    while hit is not None:
        p = hit.start()
        s = max(rfind(b"\n", start, p) + 1, start)
        e = find(b"\n", p, limit)
        stats.end = base + e + 1  # a consumer checkpointing after this line resumes just past it
        yield view[s:e]
        hit = search(data, e + 1, limit)


# Read buffers, reused: a fresh 4 MB bytes object per read was mapped and faulted in page
# by page each time (measured on 1 GB: 184k page faults, 0.3 s of system time; with one
# reused buffer, 1k and 0.09 s).
_free_buffers: list[bytearray] = []


def read_candidates(
    fh: BinaryIO, start: int, end: int, markers: tuple[bytes, ...], stats: ReadStats, *, final: bool,
    chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[bytes | memoryview]:
    """Yield the complete lines in [start, end) that contain one of `markers`, in order.

    A line is bytes or a memoryview into the read buffer, valid until the next line is
    asked for (copying every candidate line cost more than decoding some of them); a
    consumer that keeps one copies it with bytes().

    `stats.end` ends up just past the last complete line. When `final` is set, a last
    line without a newline is taken only if it parses as JSON (a writer may be midway
    through it otherwise; it is read again once complete). Memory stays bounded by
    about CHUNK_BYTES + MAX_LINE_BYTES whatever the line lengths: a longer line is
    streamed past, and counted as malformed if it held a marker.
    """
    buf = _free_buffers.pop() if _free_buffers else bytearray(chunk_bytes)
    try:
        if len(buf) != chunk_bytes:
            buf = bytearray(chunk_bytes)
        yield from _read(fh, start, end, markers, stats, final, buf, max_line_bytes)
    finally:
        _free_buffers.append(buf)


def _read(fh: BinaryIO, start: int, end: int, markers: tuple[bytes, ...], stats: ReadStats, final: bool,
          buf: bytearray, max_line_bytes: int) -> Iterator[bytes | memoryview]:
    fh.seek(start)
    search = _marker_pattern(markers).search
    view = memoryview(buf)
    find, rfind = buf.find, buf.rfind
    pos = start  # file offset of the first byte not consumed yet (where `carry` starts)
    carry = b""  # the partial line at the end of the previous chunk
    skipping = False  # inside an oversized line
    skipped_hit = False
    tail = b""  # last bytes of the skipped line, so a marker across chunks is seen
    read_to = start
    while read_to < end:
        n = fh.readinto(view[: min(len(buf), end - read_to)])  # type: ignore[attr-defined]
        if not n:
            break
        chunk_off = read_to
        read_to += n
        i = 0  # buf[i:n] starts at a line start
        if skipping:
            nl = find(b"\n", 0, n)
            if nl < 0:
                skipped_hit = skipped_hit or _has_marker(tail + view[:n], markers)
                tail = bytes(view[max(n - 64, 0):n])
                continue
            skipped_hit = skipped_hit or _has_marker(tail + view[:nl], markers)
            stats.oversized_candidates += int(skipped_hit)
            skipping, skipped_hit, tail = False, False, b""
            i = nl + 1
            pos = chunk_off + i
        elif carry:
            # finish the line begun in the previous chunk on its own: joining whole chunks
            # copied every byte once more
            nl = find(b"\n", 0, n)
            if nl < 0:
                carry += view[:n]
                if len(carry) > max_line_bytes:
                    skipping, skipped_hit, tail, carry = True, _has_marker(carry, markers), carry[-64:], b""
                continue
            line = carry + view[:nl]
            carry = b""
            i = nl + 1
            pos = chunk_off + i
            if search(line) is not None:
                stats.end = pos
                yield line
        limit = rfind(b"\n", 0, n) + 1  # buf[:limit] ends with a complete line
        if limit > i:
            yield from _scan(buf, view, i, limit, markers, chunk_off, stats)
            pos = chunk_off + limit
        carry = bytes(view[max(limit, i):n])
        if len(carry) > max_line_bytes:
            skipping, skipped_hit, tail, carry = True, _has_marker(carry, markers), carry[-64:], b""
    stats.end = pos
    if final and carry and not skipping:
        try:
            loads(carry)
        except JSON_ERRORS:
            return  # still being written: read again next time
        stats.end = pos + len(carry)
        if _has_marker(carry, markers):
            yield carry


def json_object(line: bytes | memoryview, ctx: FileContext) -> dict[str, Any] | None:
    """A line decoded as a JSON object; anything else is counted as malformed (None)."""
    try:
        obj = loads(line)
    except JSON_ERRORS:
        ctx.bad_line()
        return None
    if not isinstance(obj, dict):
        ctx.bad_line()
        return None
    return obj


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_ts(value: Any) -> datetime | None:
    """An ISO-8601 timestamp (with Z or an offset) as aware UTC, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


# A token count as the typed decoders read it; another number makes the line go the generic way.
Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


def as_int(value: Any) -> int:
    """A token count: ints and integral floats from 0 to MAX_TOKENS; anything else raises ValueError."""
    if value.__class__ is int and 0 <= value <= MAX_TOKENS:  # the common case first
        return value  # type: ignore[no-any-return]
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError("boolean token count")
    if isinstance(value, int) and 0 <= value <= MAX_TOKENS:
        return value
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_TOKENS:
        return int(value)
    raise ValueError(f"bad token count {value!r}")


def ts_text(value: Any) -> str | None:
    """An ISO-8601 timestamp as the store's text (naive UTC, microseconds), or None.

    The agents write `2026-10-07T09:00:21.162Z`; that form is validated and sliced,
    anything else goes through datetime."""
    if (value.__class__ is str and len(value) == 24 and value[23] == "Z" and value[10] == "T"
            and value[4] == "-" and value[7] == "-" and value[19] == "."):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return None
        return f"{value[:10]} {value[11:23]}000"
    ts = parse_ts(value)
    return None if ts is None else sqlite_time(ts)


def usage_params(
    ctx: FileContext, *, key: str, ts: str, model: str | None, session_id: str | None, project: str | None,
    tokens: Counts, request_id: str | None = None, reported: float | None = None,
) -> UsageParams:
    """One call read from the file of `ctx` (its source, agent, provider and user) as a store
    row, its `tokens` as the vendor's function in telemetry/tokens.py gave them, priced by
    `costs.price_call`: the source's own figure (`reported`), else the file's price table at
    the call's date (`ts`), else unpriced (never 0).

    Parsers name every argument; keep the parameters few: CPython 3.11 compiles a call with
    more keyword arguments than about a dozen into one that builds a dict first, and this
    call is made once per row."""
    provider = ctx.provider
    input_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens = tokens
    cost_usd, cost_source, price_table_sha256 = price_call(
        ctx.price_table, model, provider, ts, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
        cache_write_1h_tokens, reported)
    return UsageParams(key, ctx.source, ts, model, ctx.agent, provider, session_id, project, ctx.user, input_tokens,
                       cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens,
                       cost_usd, cost_source, None, request_id, None, None, price_table_sha256)
