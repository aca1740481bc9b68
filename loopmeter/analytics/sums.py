"""Usage summed in SQL over pieces of time, on a Store or a SQLite file: what `loopmeter usage`
and the dashboard's usage cube read wherever the hourly sums (usage_hour) cannot serve, that is
the parts of hours a local day begins inside and the partial hours at a range's ends
(loopmeter/analytics/days.py decides which).

Every sum has the rollup's measures in its order (`rollup.MEASURES`). Only the stdlib
`sqlite3` is needed for a SQLite file, so `loopmeter usage` starts fast.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.analytics import days
from loopmeter.analytics.days import piece_key
from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import rollup
from loopmeter.store.pg_read import PgReader

if TYPE_CHECKING:
    from loopmeter.store import Store

# rollup.MEASURES from usage rows: calls, unpriced, cost, input, cache_read, cache_write, output, reasoning
ROW_SUMS = (
    "count(*), sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END), coalesce(sum(cost_usd), 0), "
    "coalesce(sum(input_tokens), 0), coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0), "
    "coalesce(sum(output_tokens), 0), coalesce(sum(reasoning_tokens), 0)"
)
# the same from usage_hour
HOUR_SUMS = ("sum(calls), sum(unpriced), sum(cost), sum(input), sum(cache_read), sum(cache_write), sum(output), "
             "sum(reasoning)")
_PIECES_PER_STATEMENT = 1000  # 3 bound values each, well inside SQLite's limit of 32,766
# Pieces read calls scattered over the file (rows are stored in arrival order, not by time):
# without a memory map each page costs a system call, which doubled the time of a month's pieces.
_MMAP_BYTES = 1 << 30


class Db:
    """Runs named-parameter SQL on a Store (SQLAlchemy), a SQLite file (stdlib driver, read-only)
    or a PostgreSQL store through a PgReader (psycopg alone; the caller's, left open).
    A Store on a SQLite file is read through the stdlib driver too."""

    def __init__(self, target: Store | PgReader | str | Path):
        self._store: Store | None = None
        self._conn: sqlite3.Connection | None = None
        self._pg: PgReader | None = None
        if isinstance(target, PgReader):
            self._pg, self.dialect = target, target.dialect
            return
        if not isinstance(target, str | Path) and target.dialect == "sqlite" \
                and target.engine.url.database not in (None, "", ":memory:"):
            target = Path(str(target.engine.url.database))
        if isinstance(target, str | Path):
            url = str(target)
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
            if path is None and isinstance(target, str) and "://" in url:
                from loopmeter.store import open_store

                self._store = open_store(url)
            else:
                self._conn = sqlite3.connect(f"file:{path or url}?mode=ro", uri=True, timeout=10)
                self._conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        else:
            self._store = target
        self.dialect = self._store.dialect if self._store is not None else "sqlite"

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        if self._conn is not None:
            return self._conn.execute(sql, params).fetchall()
        if self._pg is not None:
            return self._pg.rows(sql, params)
        assert self._store is not None
        from sqlalchemy import text

        with self._store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def ts_param(self, ts: datetime) -> Any:
        """A bound for `ts`: SQLite stores naive UTC text, PostgreSQL takes the aware datetime."""
        utc = ts.astimezone(UTC)
        if self._conn is not None or self.dialect == "sqlite":
            return utc.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        return utc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def cache_hit_ratio(input_tokens: float, cache_read: float, cache_write: float) -> float | None:
    """cache_read / (input + cache_read + cache_write); None when there is no input at all."""
    denom = input_tokens + cache_read + cache_write
    return None if denom <= 0 else cache_read / denom


def measures(values: Sequence[Any]) -> tuple[Any, ...]:
    """The 8 summed measures as plain Python numbers (PostgreSQL sums BIGINT as NUMERIC)."""
    calls, unpriced, cost, *tokens = values
    return (int(calls or 0), int(unpriced or 0), float(cost or 0.0), *(int(v or 0) for v in tokens))


def piece_sums(db: Db, pieces: Sequence[tuple[datetime, datetime]], dims: Sequence[str], where: str = "1=1",
               params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """(piece key, *dims, *measures) per piece [start, end) and value of the `dims` SQL expressions,
    over the usage rows matching `where`. Pieces must not overlap."""
    out: list[tuple[Any, ...]] = []
    groups = ", ".join(str(i) for i in range(1, len(dims) + 2))
    for at in range(0, len(pieces), _PIECES_PER_STATEMENT):
        bound = dict(params or {})
        values = []
        for i, (lo, hi) in enumerate(pieces[at:at + _PIECES_PER_STATEMENT]):
            bound[f"pk{i}"], bound[f"plo{i}"], bound[f"phi{i}"] = piece_key(lo), db.ts_param(lo), db.ts_param(hi)
            values.append(f"(:pk{i}, :plo{i}, :phi{i})")
        sql = (f"WITH piece(k, lo, hi) AS (VALUES {', '.join(values)}) "
               f"SELECT piece.k, {', '.join(dims)}, {ROW_SUMS} "
               f"FROM piece JOIN usage ON usage.ts >= piece.lo AND usage.ts < piece.hi "
               f"WHERE {where} GROUP BY {groups}")
        out.extend((*r[:len(dims) + 1], *measures(r[len(dims) + 1:])) for r in db.rows(sql, bound))
    return out


def utc_ts(value: Any) -> datetime:
    """A stored timestamp (SQLite's naive UTC text, or a datetime) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def rollup_is_current(db: Db) -> bool:
    """Whether usage_hour holds every usage row (rows written around the store leave it behind)."""
    try:
        n, calls = db.rows("SELECT (SELECT count(*) FROM usage), (SELECT coalesce(sum(calls), 0) FROM usage_hour)",
                           {})[0]
    except sqlite3.Error:
        return False  # a store from before schema 3, opened read-only
    return int(n) == int(calls)


def stored_range(db: Db, rollup_current: bool) -> tuple[datetime, datetime] | None:
    """[first stored call's hour, the hour after the last one's), or None for an empty store."""
    if rollup_current:
        first, last = db.rows("SELECT min(hour), max(hour) FROM usage_hour", {})[0]
    else:
        first, last = db.rows("SELECT min(ts), max(ts) FROM usage", {})[0]
    if first is None:
        return None
    lo = days.parse_key(first) if rollup_current else utc_ts(first)
    hi = days.parse_key(last) if rollup_current else utc_ts(last)
    return lo.replace(minute=0, second=0, microsecond=0), hi.replace(minute=0, second=0, microsecond=0) + days.HOUR


DAY_DIMS = ("agent", "provider", "cost_source", "model", "user")  # what the Spend box and the tier rule need


def day_sums(db: Db, filters: Filters) -> list[tuple[Any, ...]]:
    """(UTC day, agent, provider, cost source, model, user, *measures) over the filter's range and
    dimensions: the hourly sums (usage_hour) of the whole hours inside it, the calls of the partial
    hours at its ends (or every call, when the rollup is behind the usage rows). Unknown dimensions
    are None. UTC days, whatever the filter's zone: a range total and the vendors' UTC days need no
    local day."""
    current = rollup_is_current(db)
    lo, hi = to_utc(filters.since), to_utc(filters.until)
    if lo is None or hi is None:
        stored = stored_range(db, current)
        if stored is None:
            return []
        lo, hi = lo or stored[0], hi or stored[1]
    plan = days.plan(UTC, lo, hi)  # in UTC no hour is split: only the range's ends come in pieces
    selected = filters.usage_dims()
    where = " AND ".join(["1=1", *(f'"{dim}" = :{dim}' for dim in selected)])
    dims = [f"coalesce(\"{d}\", '')" for d in DAY_DIMS]
    groups = "GROUP BY 1, 2, 3, 4, 5, 6"
    rows: list[tuple[Any, ...]] = []
    keys = plan.hour_keys()
    if keys is not None and plan.first_hour is not None and plan.end_hour is not None:
        if current:
            sql = (f"SELECT substr(hour, 1, 10), {', '.join(dims)}, {HOUR_SUMS} FROM usage_hour "
                   f"WHERE hour >= :h0 AND hour < :h1 AND {where} {groups}")
            bound = {**selected, "h0": keys[0], "h1": keys[1]}
        else:
            sql = (f"SELECT substr({rollup.HOUR_OF_TS[db.dialect]}, 1, 10), {', '.join(dims)}, {ROW_SUMS} "
                   f"FROM usage WHERE ts >= :h0 AND ts < :h1 AND {where} {groups}")
            bound = {**selected, "h0": db.ts_param(plan.first_hour), "h1": db.ts_param(plan.end_hour)}
        rows += [(*r[:6], *measures(r[6:])) for r in db.rows(sql, bound)]
    rows += [(key[:10], *rest) for key, *rest in piece_sums(db, plan.pieces, dims, where, selected)]
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        key = (r[0], *(v or None for v in r[1:6]))
        acc = totals.setdefault(key, [0] * len(r[6:]))
        for i, v in enumerate(r[6:]):
            acc[i] += v
    return [(*key, *values) for key, values in sorted(totals.items(), key=lambda kv: [str(k) for k in kv[0]])]
