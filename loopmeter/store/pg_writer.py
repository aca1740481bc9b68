"""Bulk usage writes to PostgreSQL through psycopg: COPY, then set-based SQL.

Rows go into a temporary table with COPY (one round trip for a batch, no per-row
parameter binding), then one statement inserts those whose key is not stored yet and adds
exactly the inserted rows to the hourly rollup. Executemany of an INSERT ... RETURNING
per row, with the rollup summed again by id, was what made PostgreSQL twelve times
slower than SQLite for the same logs.

`PgUsageWriter` is log ingest's writer (SQLAlchemy-free, as `SqliteUsageWriter`): a batch's
rows, its sessions and the cursors of the files it completes in one transaction. Saving the
cursors through the Store's ORM, one merge per file and three commits per batch, cost each
ingest worker about 0.3 s of CPU per GB of logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from loopmeter.records import USAGE_FIELDS, UsageParams
from loopmeter.store import rollup, sessions
from loopmeter.store.sqlite_writer import cursor_params, cursor_upsert_sql, first_of_each_key

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


SESSION_UPSERT = sessions.upsert_sql("%s")
CURSOR_UPSERT = cursor_upsert_sql("%s")


def _utc_text_times(cur: Any) -> None:
    cur.execute("SET LOCAL TIME ZONE 'UTC'")  # the times are naive UTC text; the columns are timestamptz


def insert_usage(conn: Any, params: list[UsageParams]) -> int:
    """Insert the rows (times as naive UTC text) whose key is not stored, and add them to the
    rollup; `conn` is a psycopg connection inside a transaction. Returns how many were new."""
    params = first_of_each_key(params)
    if not params:
        return 0
    with conn.cursor() as cur:
        _utc_text_times(cur)
        cur.execute("SET LOCAL client_min_messages = warning")  # no NOTICE for the existing table
        cur.execute(STAGE)
        with cur.copy(COPY) as copy:
            for row in params:
                copy.write_row(row)
        cur.execute(INSERT)
        return int(cur.fetchone()[0])


class PgUsageWriter:
    """One process's psycopg connection for ingest writes: rows, sessions and cursors in one
    transaction per batch."""

    def __init__(self, url: str):
        import psycopg

        from loopmeter.store.pg_read import libpq_url

        self.conn = psycopg.connect(libpq_url(url))

    def write(self, params: list[UsageParams], cursors: list[dict[str, Any]],
              session_rows: Sequence[tuple[Any, ...]] = ()) -> int:
        """Rows as store parameters, file cursors and the rows' sessions (sessions.SESSION_FIELDS
        order, times as naive UTC text), in one transaction; returns how many rows were new.
        Sessions and cursors are written in key order, as the rows are: workers writing the
        same session side by side wait for each other instead of deadlocking."""
        with self.conn.transaction():
            added = insert_usage(self.conn, params)
            with self.conn.cursor() as cur:
                _utc_text_times(cur)
                if session_rows:
                    cur.executemany(SESSION_UPSERT, sorted(session_rows, key=itemgetter(0, 1)))  # (source, session_id)
                if cursors:
                    cur.executemany(CURSOR_UPSERT, sorted(map(cursor_params, cursors), key=itemgetter(0)))  # path
        return added

    def close(self) -> None:
        self.conn.close()
