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

from loopmeter.analytics.days import piece_key

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
    """Runs named-parameter SQL on a Store (SQLAlchemy) or a SQLite file (stdlib driver, read-only).
    A Store on a SQLite file is read through the stdlib driver too."""

    def __init__(self, target: Store | str | Path):
        self._store: Store | None = None
        self._conn: sqlite3.Connection | None = None
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
        assert self._store is not None
        from sqlalchemy import text

        with self._store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def ts_param(self, ts: datetime) -> Any:
        """A bound for `ts`: SQLite stores naive UTC text, SQLAlchemy takes the aware datetime."""
        utc = ts.astimezone(UTC)
        if self._conn is not None or self.dialect == "sqlite":
            return utc.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        return utc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


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
