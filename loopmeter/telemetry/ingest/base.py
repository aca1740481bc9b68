"""What every log source shares: the per-file parse context and a bounded line reader.

A source module (claude_code, codex, gemini) provides `roots(env)` (where its logs
live), `files(root)` (its log files under a root) and `parse(lines, ctx)` (usage rows
from candidate lines). The runner (runner.py) decides which bytes of which file to
read, and only `loopmeter.store` writes what the parsers return.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from loopmeter.records import COST_CALCULATED, COST_REPORTED, COST_UNPRICED, UsageRow

try:  # orjson is several times faster than json on the candidate lines; json is the fallback
    from orjson import JSONDecodeError as _OrjsonError
    from orjson import loads as _loads

    JSON_ERRORS: tuple[type[Exception], ...] = (_OrjsonError, ValueError)
except ImportError:  # pragma: no cover - orjson is a dependency
    import json

    _loads = json.loads  # type: ignore[assignment]
    JSON_ERRORS = (ValueError,)

CHUNK_BYTES = 4 << 20
# A longer line is streamed past without being kept (Claude Code writes user lines of
# hundreds of MB); one that could carry usage is counted as malformed.
MAX_LINE_BYTES = 16 << 20


def loads(data: bytes) -> Any:
    return _loads(data)


@dataclass
class FileContext:
    """One file being read: where it is, what the parser carries between reads."""

    path: Path
    source: str  # the usage row `source`, e.g. "claude-code-log"
    state: dict[str, Any] = field(default_factory=dict)  # saved in ingest_cursor.state
    malformed: int = 0
    price_table: Any = None  # loopmeter.telemetry.pricing.PriceTable, or None for no pricing

    def bad_line(self) -> None:
        self.malformed += 1


@dataclass
class Source:
    """A kind of agent log."""

    name: str  # claude-code, codex, gemini (the `--source` value)
    tag: str  # usage row source, e.g. claude-code-log
    roots: Callable[[dict[str, str]], list[Path]]
    files: Callable[[Path], Iterator[Path]]
    parse: Callable[[Iterable[bytes], FileContext], Iterator[UsageRow]]
    candidate: re.Pattern[bytes]  # a line that can matter contains this
    splittable: bool = False  # lines are independent: a big file may be read in byte ranges
    whole_file_suffix: str | None = None  # such files are one JSON document, re-read whole when changed

    def is_whole_file(self, path: Path) -> bool:
        return self.whole_file_suffix is not None and path.name.endswith(self.whole_file_suffix)


@dataclass
class ReadStats:
    """What a read of one byte range found."""

    end: int  # offset just past the last complete line read (so far, while reading)
    lines: int = 0
    oversized_candidates: int = 0
    bad_lines: int = 0  # lines that cannot be JSON objects (checked cheaply, without parsing)


def _looks_like_object(line: bytes) -> bool:
    s = line.strip()
    return not s or (s[:1] == b"{" and s[-1:] == b"}")


def read_candidates(
    fh: BinaryIO, start: int, end: int, candidate: re.Pattern[bytes], stats: ReadStats, *, final: bool
) -> Iterator[bytes]:
    """Yield the complete lines in [start, end) that match `candidate`, in order.

    `stats.end` ends up just past the last complete line. When `final` is set, a last
    line without a newline is taken only if it parses as JSON (a writer may be midway
    through it otherwise; it is read again once complete). Memory stays bounded by
    CHUNK_BYTES + MAX_LINE_BYTES whatever the line lengths.
    """
    fh.seek(start)
    pos = start  # offset of the first byte not yet consumed as part of a complete line
    parts: list[bytes] = []  # pieces of the current partial line
    partial_len = 0
    skipping = False  # inside an oversized line
    skipped_hit = False
    tail = b""  # last bytes of the skipped line, so a marker across chunks is seen
    search = candidate.search
    while pos + partial_len < end:
        data = fh.read(min(CHUNK_BYTES, end - pos - partial_len))
        if not data:
            break
        nl = data.find(b"\n")
        if skipping:
            if nl < 0:
                skipped_hit = skipped_hit or bool(search(tail + data))
                tail = data[-64:]
                partial_len += len(data)
                continue
            skipped_hit = skipped_hit or bool(search(tail + data[:nl]))
            pos += partial_len + nl + 1
            stats.lines += 1
            if skipped_hit:
                stats.oversized_candidates += 1
            skipping, skipped_hit, tail, partial_len = False, False, b"", 0
            data = data[nl + 1 :]
        elif parts and nl >= 0:
            head = b"".join(parts) + data[: nl + 1]
            parts, partial_len = [], 0
            data = head + data[nl + 1 :]
        elif parts:
            parts.append(data)
            partial_len += len(data)
            if partial_len > MAX_LINE_BYTES:
                skipped_hit = bool(search(b"".join(parts)))
                tail = parts[-1][-64:]
                parts = []
                skipping = True
            continue
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            pos += len(line) + 1
            stats.lines += 1
            if search(line):
                stats.end = pos  # a consumer checkpointing after this line resumes just past it
                yield line
            elif not _looks_like_object(line):
                stats.bad_lines += 1
        if rest:
            parts = [rest]
            partial_len = len(rest)
            if partial_len > MAX_LINE_BYTES:
                skipped_hit = bool(search(rest))
                tail = rest[-64:]
                parts = []
                skipping = True
    stats.end = pos
    if final and parts and not skipping:
        last = b"".join(parts)
        try:
            loads(last)
        except JSON_ERRORS:
            return  # still being written: read again next time
        stats.end = pos + len(last)
        stats.lines += 1
        if search(last):
            yield last


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


def as_int(value: Any) -> int:
    """A token count: ints and integral floats; anything else raises ValueError."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError("boolean token count")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"bad token count {value!r}")


def price(row: UsageRow, table: Any, reported: float | None = None) -> UsageRow:
    """Set the row's cost: the source's own figure, else the price table, else unpriced."""
    if reported is not None:
        row.cost_usd = float(reported)
        row.cost_source = COST_REPORTED
        return row
    cost = None
    if table is not None:
        cost = table.cost(
            row.model,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_read_tokens=row.cache_read_tokens,
            cache_write_tokens=row.cache_write_tokens,
            cache_write_1h_tokens=row.cache_write_1h_tokens,
            provider=row.provider,
        )
    if cost is None:
        row.cost_usd = None
        row.cost_source = COST_UNPRICED
    else:
        row.cost_usd = cost
        row.cost_source = COST_CALCULATED
        row.price_table_sha256 = table.sha256
    return row
