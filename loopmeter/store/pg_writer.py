"""Bulk usage writes to PostgreSQL through psycopg: COPY, then set-based SQL.

Rows go into a temporary table with COPY (one round trip for a batch, no per-row
parameter binding), then one statement inserts those whose key is not stored yet and adds
exactly the inserted rows to the hourly rollup. Executemany of an INSERT ... RETURNING
per row, with the rollup summed again by id, was what made PostgreSQL twelve times
slower than SQLite for the same logs.
"""

from __future__ import annotations

from typing import Any

from loopmeter.records import USAGE_FIELDS, UsageParams
from loopmeter.store import rollup
from loopmeter.store.sqlite_writer import first_of_each_key

_COLUMNS = ", ".join(f'"{c}"' for c in USAGE_FIELDS)
# A temporary table lives as long as the connection (the pool keeps it) and is emptied by
# every commit; created on a connection's first batch.
STAGE = f"CREATE TEMP TABLE IF NOT EXISTS usage_in ON COMMIT DELETE ROWS AS SELECT {_COLUMNS} FROM usage WITH NO DATA"
COPY = f"COPY usage_in ({_COLUMNS}) FROM STDIN"
# ORDER BY key: writers that insert the same keys (a resumed session's log repeats earlier
# calls) take their locks in one order, so concurrent batches wait for each other instead of
# deadlocking; the rollup's upsert orders its hours the same way.
INSERT = rollup.add_inserted_sql(f"INSERT INTO usage ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_in ORDER BY key "
                                 "ON CONFLICT (key) DO NOTHING RETURNING *")


def insert_usage(conn: Any, params: list[UsageParams]) -> int:
    """Insert the rows (times as naive UTC text) whose key is not stored, and add them to the
    rollup; `conn` is a psycopg connection inside a transaction. Returns how many were new."""
    params = first_of_each_key(params)
    if not params:
        return 0
    with conn.cursor() as cur:
        cur.execute("SET LOCAL client_min_messages = warning")  # no NOTICE for the existing table
        cur.execute("SET LOCAL TIME ZONE 'UTC'")  # the times are UTC text; ts is a timestamptz
        cur.execute(STAGE)
        with cur.copy(COPY) as copy:
            for row in params:
                copy.write_row(row)
        cur.execute(INSERT)
        return int(cur.fetchone()[0])
