"""Plain records passed between parts before they reach the store.

Light on purpose (dataclasses only): parsers, backends and the receiver build
these without importing SQLModel; only `loopmeter.store` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

from loopmeter.vocab import CostSource


@dataclass(slots=True)  # slots: ~150k of these per GB of logs, built and read field by field
class UsageRow:
    """One model call. Token fields are None when the source did not report them."""

    key: str  # dedup key, unique in the store (e.g. "anthropic-req:<request id>")
    source: str  # loop, claude-code-log, codex-log, gemini-log, otlp, claude-json, ...
    ts: datetime
    model: str | None = None
    agent: str | None = None
    provider: str | None = None
    session_id: str | None = None
    project: str | None = None
    user: str | None = None
    input_tokens: int | None = None  # non-cached input
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None  # all cache writes (5-minute + 1-hour)
    cache_write_1h_tokens: int | None = None  # the 1-hour part of cache_write_tokens, where known
    output_tokens: int | None = None  # reasoning included
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    cost_source: CostSource = CostSource.UNPRICED
    latency_ms: float | None = None
    request_id: str | None = None
    run_id: str | None = None
    attempt_id: str | None = None
    price_table_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        # Shallow on purpose: every field is a scalar, and dataclasses.asdict's deep copy
        # was most of the time of a bulk log ingest.
        return {name: getattr(self, name) for name in USAGE_FIELDS}

    @property
    def total_tokens(self) -> int:
        return total_tokens(self.input_tokens, self.cache_read_tokens, self.cache_write_tokens, self.output_tokens)


def total_tokens(input_tokens: int | None, cache_read: int | None, cache_write: int | None, output: int | None) -> int:
    """A call's tokens as token budgets count them: input, cache reads and writes, and output
    (reasoning is inside output)."""
    return (input_tokens or 0) + (cache_read or 0) + (cache_write or 0) + (output or 0)


USAGE_FIELDS = tuple(f.name for f in fields(UsageRow))  # also the usage table's columns, but id


class UsageParams(NamedTuple):
    """One model call as the store writes it: UsageRow's fields in the same order, the time
    as the store's text (naive UTC, `sqlite_writer.sqlite_time`). What log parsers yield: a
    plain tuple underneath (a GB of logs holds ~150k calls; an object per call cost a third
    of a worker's time), so it goes to the database driver and MessagePack as it is."""

    key: str
    source: str
    ts: str
    model: str | None
    agent: str | None
    provider: str | None
    session_id: str | None
    project: str | None
    user: str | None
    input_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    cache_write_1h_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    cost_source: CostSource
    latency_ms: float | None
    request_id: str | None
    run_id: str | None
    attempt_id: str | None
    price_table_sha256: str | None


assert UsageParams._fields == USAGE_FIELDS, "UsageParams holds UsageRow's fields in its order"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ExecResult:
    """What a sandboxed (or plain) command did."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    timed_out: bool = False
    killed_reason: str | None = None  # timeout, memory, output, cancelled
    denials: list[dict[str, Any]] = field(default_factory=list)
