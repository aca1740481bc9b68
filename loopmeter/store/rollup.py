"""The `usage_hour` rollup: usage summed per UTC hour and dimensions, written with the rows.

`Store.add_usage` adds the rows it inserted to their hours in the same transaction, so
the rollup is exact whenever a transaction is. Rows written some other way (a bulk
seed, a hand edit, a deletion) show as a difference between `count(*)` of usage and the
rollup's `sum(calls)`: readers check that and rebuild (`rebuild`) when they differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy is imported by the functions that take a Connection
    from sqlalchemy import Connection

KEYS = ("hour", "agent", "model", "provider", "source", "project", "user", "cost_source")
MEASURES = ("calls", "unpriced", "cost", "input", "cache_read", "cache_write", "output", "reasoning")
_DIMS = KEYS[1:]  # usage columns of the same names

HOUR_OF_TS = {  # the usage_hour key of a usage row's ts
    # SQLite holds ts as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
    "sqlite": "substr(ts, 1, 13)",
    "postgresql": "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')",
}


def _q(name: str) -> str:
    return f'"{name}"'  # "user" is a reserved word in PostgreSQL


def _sum_sql(dialect: str, where: str, table: str = "usage") -> str:
    """INSERT the sums of the usage rows matching `where` into usage_hour, adding to existing
    hours; `table` is where the rows are read (usage, or a CTE of the rows just inserted)."""
    dims = ", ".join(f"coalesce({_q(d)}, '')" for d in _DIMS)
    sums = ", ".join([
        "count(*)",
        "sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END)",
        "coalesce(sum(cost_usd), 0)",
        *(f"coalesce(sum({c}), 0)" for c in ("input_tokens", "cache_read_tokens", "cache_write_tokens",
                                              "output_tokens", "reasoning_tokens")),
    ])
    groups = ", ".join(str(i) for i in range(1, len(KEYS) + 1))
    updates = ", ".join(f"{m} = usage_hour.{m} + excluded.{m}" for m in MEASURES)
    # ORDER BY: concurrent PostgreSQL writers lock hours in the same order (no deadlock)
    return (
        f"INSERT INTO usage_hour ({', '.join(_q(k) for k in KEYS)}, {', '.join(MEASURES)}) "
        f"SELECT {HOUR_OF_TS[dialect]}, {dims}, {sums} FROM {table} WHERE {where} "
        f"GROUP BY {groups} ORDER BY {groups} "
        f"ON CONFLICT ({', '.join(_q(k) for k in KEYS)}) DO UPDATE SET {updates}"
    )


def upsert_sql() -> str:
    """Add precomputed sums (KEYS then MEASURES, per row) to usage_hour."""
    updates = ", ".join(f"{m} = usage_hour.{m} + excluded.{m}" for m in MEASURES)
    return (f"INSERT INTO usage_hour ({', '.join(_q(k) for k in KEYS)}, {', '.join(MEASURES)}) "
            f"VALUES ({', '.join('?' * (len(KEYS) + len(MEASURES)))}) "
            f"ON CONFLICT ({', '.join(_q(k) for k in KEYS)}) DO UPDATE SET {updates}")


# SQL adding the rows just written in this SQLite transaction, their number bound as its one
# parameter: the highest ids, as a table without AUTOINCREMENT numbers new rows max(id)+1 and
# this transaction is the only writer.
ADD_NEWEST_SQLITE = _sum_sql("sqlite", "id > (SELECT max(id) FROM usage) - ?")


def add_inserted_sql(insert: str) -> str:
    """PostgreSQL: run `insert` (an INSERT INTO usage ... RETURNING *) and add the rows it
    inserted to the rollup in the same statement; the statement returns how many there were."""
    return (f"WITH inserted AS ({insert}), hours AS ({_sum_sql('postgresql', 'true', 'inserted')}) "
            "SELECT count(*) FROM inserted")


def rebuild(conn: Connection, dialect: str) -> None:
    """Recompute the whole rollup from the usage rows."""
    conn.exec_driver_sql("DELETE FROM usage_hour")
    conn.exec_driver_sql(_sum_sql(dialect, "true"))


def state(conn: Connection) -> tuple[int, int, int, float]:
    """(usage rows, their max id, calls in the rollup, cost in the rollup), read in one statement
    so both sides come from the same snapshot."""
    row = conn.exec_driver_sql(
        "SELECT (SELECT count(*) FROM usage), (SELECT coalesce(max(id), 0) FROM usage), "
        "(SELECT coalesce(sum(calls), 0) FROM usage_hour), (SELECT coalesce(sum(cost), 0) FROM usage_hour)"
    ).one()
    return int(row[0]), int(row[1]), int(row[2]), float(row[3])


def usage_cost(conn: Connection) -> float:
    return float(conn.exec_driver_sql("SELECT coalesce(sum(cost_usd), 0) FROM usage").scalar_one())


def fetch(conn: Connection) -> list[Any]:
    """Every rollup row as a plain tuple, KEYS then MEASURES (straight from the driver: this
    is tens of thousands of rows on a big store)."""
    sql = f"SELECT {', '.join(_q(k) for k in KEYS)}, {', '.join(MEASURES)} FROM usage_hour"
    return list(conn.exec_driver_sql(sql).fetchall())


UNIT_SEP = "\x1f"


def fetch_packed(conn: Connection) -> tuple[int, list[str]] | None:
    """SQLite only: (row count, one string per column) with the column's values joined by
    UNIT_SEP (dimensions) or ',' (measures). One C-level scan instead of a Python tuple per
    row: about 3x faster for 100k rows. All the aggregates of one SELECT walk the rows in
    the same order, so the i-th item of every string belongs to the same rollup row."""
    if conn.dialect.name != "sqlite":
        return None
    parts = ["count(*)"]
    parts += [f"coalesce(group_concat({_q(k)}, char(31)), '')" for k in KEYS]
    parts += [f"coalesce(group_concat({m}, ','), '')" for m in MEASURES]
    row = conn.exec_driver_sql(f"SELECT {', '.join(parts)} FROM usage_hour").one()
    return int(row[0]), [str(v) for v in row[1:]]
