"""Bulk usage writes to a SQLite store through the stdlib driver, without SQLAlchemy.

Log ingest stores ~150k rows per GB. Positional tuples straight to `executemany` skip
SQLAlchemy's per-row parameter processing (about half the insert time). Rows, the hourly rollup of the new ones and the
cursors of the files they complete are written in one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

from loopmeter.records import USAGE_FIELDS, UsageParams, UsageRow
from loopmeter.store import rollup, sessions

# how long a SQLite writer waits for another process's lock before "database is locked"
BUSY_TIMEOUT_MS = int(os.environ.get("LOOPMETER_BUSY_TIMEOUT_MS", "10000"))
_values = attrgetter(*USAGE_FIELDS)


def _usage_insert(rows: list[list[str]]) -> str:
    """INSERT of usage rows (ignoring stored keys), each row given as one placeholder per column.

    OR IGNORE rather than ON CONFLICT (key) DO NOTHING: a statement that may abort halfway
    (a NOT NULL column) makes SQLite copy every page it touches to a statement journal
    first, which for a GB of logs wrote 380 MB to a temporary file (parent write() bytes
    535 -> 179 MB). The rows written here always hold their NOT NULL columns."""
    values = ", ".join(f"({', '.join(row)})" for row in rows)
    return f"INSERT OR IGNORE INTO usage ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in USAGE_FIELDS)}) VALUES {values}"


CURSOR_FIELDS = ("path", "source", "inode", "size", "offset", "mtime", "malformed_lines", "state", "updated_at")


def cursor_upsert_sql(placeholder: str) -> str:
    """Upsert of ingest cursors given as `cursor_params`, `placeholder` being the driver's ("?" or "%s")."""
    return (f"INSERT INTO ingest_cursor ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in CURSOR_FIELDS)}) "
            f"VALUES ({', '.join([placeholder] * len(CURSOR_FIELDS))}) ON CONFLICT (path) DO UPDATE SET "
            + ", ".join(f'"{c}" = excluded."{c}"' for c in CURSOR_FIELDS[1:]))


CURSOR_UPSERT = cursor_upsert_sql("?")


SESSION_UPSERT = sessions.upsert_sql("?")


def sqlite_time(ts: datetime) -> str:
    """A datetime in the text form SQLAlchemy's SQLite DateTime reads back: naive UTC."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.isoformat(sep=" ", timespec="microseconds")


def params_of(rows: Iterable[UsageRow]) -> list[UsageParams]:
    """Rows as the store writes them, the time as `sqlite_time` text (what the log parsers
    yield directly, see telemetry/ingest/base.py)."""
    return [UsageParams(*_values(row))._replace(ts=sqlite_time(row.ts)) for row in rows]


_TOKEN_INDEX = [USAGE_FIELDS.index(f) for f in ("input_tokens", "cache_read_tokens", "cache_write_tokens",
                                                 "output_tokens", "reasoning_tokens")]
_UPSERT_HOURS = rollup.upsert_sql()


# Columns that hold one value for most of a batch (a file's source, agent, provider and
# user; the price table; nothing for latency and runs). Rows are inserted in groups sharing
# them, those values bound once per statement of MULTI_ROWS rows: binding six text values
# per row (each copied under a lock by SQLite) was a quarter of the insert time.
CONST_FIELDS = ("source", "agent", "provider", "user", "cost_source", "latency_ms", "run_id", "attempt_id",
                "price_table_sha256")
_CONST_INDEX = [USAGE_FIELDS.index(c) for c in CONST_FIELDS]
_VAR_INDEX = [i for i in range(len(USAGE_FIELDS)) if i not in _CONST_INDEX]
_const_of = itemgetter(*_CONST_INDEX)
_var_of = itemgetter(*_VAR_INDEX)
Group = tuple[tuple[Any, ...], list[tuple[Any, ...]]]  # (CONST_FIELDS values, rows of the other columns)


def first_of_each_key(params: list[UsageParams]) -> list[UsageParams]:
    """The rows whose key has not come earlier in the batch: what inserting them one by one
    would keep. Grouped inserts do not keep the batch's order, so repeats go first."""
    seen: set[Any] = set()
    out = []
    for p in params:
        key = p.key
        if key not in seen:
            seen.add(key)
            out.append(p)
    if None in seen:  # INSERT OR IGNORE would drop such a row without a word
        raise ValueError("a usage row without a key")
    return out if len(out) < len(params) else params


def group_params(params: Iterable[UsageParams]) -> list[Group]:
    """Rows split by their CONST_FIELDS values, in order within each group. Keys must be
    unique within `params` (see first_of_each_key)."""
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for p in params:
        const = _const_of(p)
        rows = groups.get(const)
        if rows is None:
            rows = groups[const] = []
        rows.append(_var_of(p))
    return list(groups.items())


# Rows per INSERT statement: stepping one statement per row cost more than the rows' own
# work (measured on 136k rows: 0.47 s with one row per statement, 0.40 s with 64).
MULTI_ROWS = 64
CHECKPOINT_ROWS = 25_000  # about 40 MB of WAL (rows and the index pages they touch)
_SOURCE, _COST_SOURCE = CONST_FIELDS.index("source"), CONST_FIELDS.index("cost_source")


def _group_insert(rows: int) -> str:
    """INSERT of `rows` rows of one group. Parameters: the group's CONST_FIELDS values (?1..?9,
    the same in every row of the statement), then each row's other columns."""
    n_const, n_var = len(_CONST_INDEX), len(_VAR_INDEX)
    values = []
    for r in range(rows):
        row = [""] * len(USAGE_FIELDS)
        for j, column in enumerate(_CONST_INDEX):
            row[column] = f"?{1 + j}"
        for j, column in enumerate(_VAR_INDEX):
            row[column] = f"?{1 + n_const + r * n_var + j}"
        values.append(row)
    return _usage_insert(values)


INSERT_ONE, INSERT_MANY = _group_insert(1), _group_insert(MULTI_ROWS)


def _insert_group(conn: Any, const: tuple[Any, ...], rows: list[tuple[Any, ...]]) -> int:
    """Insert a group's rows, MULTI_ROWS per statement and the rest one by one; returns how many were new."""
    if const[_SOURCE] is None or const[_COST_SOURCE] is None:  # NOT NULL: OR IGNORE would drop the rows
        raise ValueError(f"usage rows without a source or cost source: {const}")
    const = tuple(const)
    whole = len(rows) - len(rows) % MULTI_ROWS
    added = 0
    if whole:
        cur = conn.executemany(INSERT_MANY, [const + tuple(chain.from_iterable(rows[i:i + MULTI_ROWS]))
                                             for i in range(0, whole, MULTI_ROWS)])
        added += max(cur.rowcount or 0, 0)
    if whole < len(rows):
        cur = conn.executemany(INSERT_ONE, [const + tuple(row) for row in rows[whole:]])
        added += max(cur.rowcount or 0, 0)
    return added


# Where the rollup's dimensions are: in a group's CONST_FIELDS values, or in its rows.
_GROUP_DIMS = [_CONST_INDEX.index(USAGE_FIELDS.index(d)) for d in ("agent", "provider", "source", "user",
                                                                    "cost_source")]
_VTS, _VMODEL, _VPROJECT, _VCOST = (_VAR_INDEX.index(USAGE_FIELDS.index(f)) for f in ("ts", "model", "project",
                                                                                      "cost_usd"))
_VTOKENS = [_VAR_INDEX.index(i) for i in _TOKEN_INDEX]
assert rollup.KEYS == ("hour", "agent", "model", "provider", "source", "project", "user", "cost_source"), \
    "hour_sums builds its rows in this order"


def hour_sums(groups: list[Group]) -> list[tuple[Any, ...]]:
    """The rollup rows of grouped rows (as rollup.ADD_NEWEST_SQLITE sums them in SQL), computed
    where the batch is made: an ingest worker, not the one writer. A group's constant values
    hold most of the rollup's dimensions, so each row adds to a key of three."""
    out: list[tuple[Any, ...]] = []
    i_in, i_cr, i_cw, i_out, i_rs = _VTOKENS
    for const, rows in groups:
        agent, provider, source, user, cost_source = (const[i] or "" for i in _GROUP_DIMS)
        acc: dict[tuple[Any, ...], list[Any]] = {}
        for r in rows:
            key = (r[_VTS][:13], r[_VMODEL], r[_VPROJECT])
            s = acc.get(key)
            if s is None:
                s = acc[key] = [0, 0, 0.0, 0, 0, 0, 0, 0]
            s[0] += 1
            cost = r[_VCOST]
            if cost is None:
                s[1] += 1
            else:
                s[2] += cost
            s[3] += r[i_in] or 0
            s[4] += r[i_cr] or 0
            s[5] += r[i_cw] or 0
            s[6] += r[i_out] or 0
            s[7] += r[i_rs] or 0
        out.extend((hour, agent, model or "", provider, source, project or "", user, cost_source, *sums)
                   for (hour, model, project), sums in acc.items())
    return out


def prepare(params: list[UsageParams]) -> tuple[list[Group], list[tuple[Any, ...]]]:
    """A batch ready for `insert_groups`: the first row of each key, grouped, and its
    `hour_sums` (computed wherever the batch is made: in an ingest worker, not the writer)."""
    groups = group_params(first_of_each_key(params))
    return groups, hour_sums(groups)


def insert_usage(conn: Any, params: list[UsageParams]) -> int:
    """Insert (ignoring stored keys) and add the new rows to the rollup; `conn` is a DB-API
    connection inside a write transaction. Returns how many rows were new."""
    return insert_groups(conn, *prepare(params))


def insert_groups(conn: Any, groups: list[Group], hours: list[tuple[Any, ...]]) -> int:
    """`insert_usage` for a batch from `prepare`. Its hour sums are added to the rollup when
    every row was new; otherwise SQL sums the rows that were."""
    added = total = 0
    for const, rows in groups:
        if rows:
            added += _insert_group(conn, const, rows)
            total += len(rows)
    if added == total:
        if hours:
            conn.executemany(_UPSERT_HOURS, hours)
    elif added:
        conn.execute(rollup.ADD_NEWEST_SQLITE, (added,))
    return added


def cursor_params(cursor: dict[str, Any]) -> tuple[Any, ...]:
    d = dict(cursor)
    if not isinstance(d.get("state"), str) and d.get("state") is not None:
        d["state"] = json.dumps(d["state"])
    d["updated_at"] = sqlite_time(d.get("updated_at") or datetime.now(UTC))
    return tuple(d.get(c) for c in CURSOR_FIELDS)


class SqliteUsageWriter:
    """One process's connection for ingest writes: rows and cursors in one transaction each."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 10000, cache_kib: int = 32 << 10,
                 checkpoint_rows: int = CHECKPOINT_ROWS, autocheckpoint_bytes: int = 64 << 20):
        self.conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        # A batch touches most leaf pages of the key index; with the default 2 MB page
        # cache they spill to the WAL again and again (measured: 136k rows took 9 s of
        # CPU instead of 1.7 s).
        self.conn.execute(f"PRAGMA cache_size=-{cache_kib}")
        # The WAL is copied back into the database by a thread of its own (`_checkpoints`),
        # every CHECKPOINT_ROWS rows: a commit that checkpointed itself held the writer for
        # 0.1 s, with the readers' batches piling up behind it (cold `usage` on 1 GB: 0.03-0.06 s
        # faster in 14-16 of 21 paired runs). What is left is copied at close.
        # The writer still checkpoints itself past 64 MB: while commits follow each other
        # without a pause, the thread's checkpoint never catches up with the last frame, and
        # the WAL only restarts after one that did (without this it reached 212 MB for a
        # 75 MB store). By then the thread has copied most frames, so this one is short.
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self.conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint_bytes // page_size}")
        self._path, self._checkpoint_rows = path, checkpoint_rows
        self._rows = 0  # written since the last checkpoint was asked for
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = False

    def write(self, params: list[UsageParams], cursors: list[dict[str, Any]],
              session_rows: Sequence[tuple[Any, ...]] = ()) -> int:
        """Rows as store parameters (`params_of`), file cursors and the rows' sessions (in
        sessions.SESSION_FIELDS order), in one transaction."""
        return self.write_groups(*prepare(params), cursors, session_rows)

    def write_groups(self, groups: list[Group], hours: list[tuple[Any, ...]], cursors: list[dict[str, Any]],
                     session_rows: Sequence[tuple[Any, ...]] = ()) -> int:
        """A batch from `prepare`, file cursors and sessions, in one transaction."""
        for attempt in range(50):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:  # busy past the timeout, or a WAL switch
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        try:
            added = insert_groups(self.conn, groups, hours)
            if session_rows:
                self.conn.executemany(SESSION_UPSERT, session_rows)
            if cursors:
                self.conn.executemany(CURSOR_UPSERT, [cursor_params(c) for c in cursors])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._rows += sum(len(rows) for _, rows in groups)
        if self._rows >= self._checkpoint_rows:
            self._rows = 0
            if self._thread is None:
                self._thread = threading.Thread(target=self._checkpoints, name="wal-checkpoint", daemon=True)
                self._thread.start()
            self._wake.set()
        return added

    def _checkpoints(self) -> None:
        """Copy committed WAL frames into the database when woken, beside the writer (PASSIVE
        never waits for a reader or writer; SQLite lets one checkpoint run during commits)."""
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # best effort: the writer checkpoints what is left when it closes
        finally:
            conn.close()

    def close(self) -> None:
        if self._thread is not None:
            self._closing = True
            self._wake.set()
            self._thread.join()
        try:  # the rest of the WAL, also when another connection (a dashboard) keeps the store open
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            self.conn.close()
