"""Open the store: SQLite (WAL, busy timeout) by default, PostgreSQL by URL."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from loopmeter.errors import StoreError
from loopmeter.records import USAGE_FIELDS, UsageParams, UsageRow
from loopmeter.store import migrations, models, sessions, sqlite_writer
from loopmeter.store.sqlite_schema import PAGE_SIZE
from loopmeter.store.sqlite_writer import BUSY_TIMEOUT_MS  # noqa: F401 - re-exported

_USAGE_COLUMNS = [c.name for c in models.Usage.__table__.columns if c.name != "id"]  # type: ignore[attr-defined]
assert set(_USAGE_COLUMNS) == set(USAGE_FIELDS), "UsageRow and the usage table must have the same fields"


def as_utc(ts: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def ensure_wal(dbapi_conn: Any, tries: int = 100) -> None:
    """Put a SQLite database in WAL mode. Switching needs an exclusive lock and SQLite answers
    "database is locked" at once (no busy wait) when another connection is converting it too,
    so a fresh database opened by several threads retries until one of them has switched it."""
    import sqlite3
    import time

    for attempt in range(tries):
        try:
            if str(dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.02 * (1 + attempt % 5))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new file only, as sqlite_schema makes it
    ensure_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """The one writer of loopmeter's records. Thread-safe; one per process is enough."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._audit_lock = threading.Lock()

    # -- sessions -----------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return len(migrations.applied(conn))

    # -- writes -------------------------------------------------------------
    def _insert_ignore(self, table: Any, rows: list[dict[str, Any]], conflict_cols: list[str]) -> int:
        if not rows:
            return 0
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        else:  # pragma: no cover - other databases are not supported
            raise StoreError(f"unsupported database dialect {self.dialect}")
        stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=conflict_cols)
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":  # psycopg reports no rowcount for batched inserts
                returning = stmt.returning(table.c[conflict_cols[0]])
                return len(conn.execute(returning, rows).all())
            result = conn.execute(stmt, rows)
            return max(result.rowcount or 0, 0)

    def add_usage(self, rows: Iterable[UsageRow]) -> int:
        """Insert usage rows, skipping keys already stored, and add the new ones to the hourly
        rollup in the same transaction. Returns how many were new."""
        return self.add_usage_params(sqlite_writer.params_of(rows))

    def add_usage_params(self, params: list[UsageParams]) -> int:
        """`add_usage` for rows as the store writes them (what log parsers yield): SQLite through
        `sqlite_writer`, PostgreSQL through `pg_writer` (COPY, then set-based SQL)."""
        if not params:
            return 0
        with self.engine.begin() as conn:
            dbapi = conn.connection.dbapi_connection
            if self.dialect == "sqlite":
                return sqlite_writer.insert_usage(dbapi, params)
            from loopmeter.store import pg_writer

            return pg_writer.insert_usage(conn.connection.driver_connection, params)

    def add_sessions(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Upsert session rows (sessions.SESSION_FIELDS order, times as the store's UTC text),
        merged with what is stored as `loopmeter.store.sessions` says."""
        if not rows:
            return
        if self.dialect == "sqlite":
            with self.engine.begin() as conn:
                conn.connection.dbapi_connection.executemany(sqlite_writer.SESSION_UPSERT, rows)  # type: ignore[union-attr]
            return
        first, last = sessions.SESSION_FIELDS.index("first_ts"), sessions.SESSION_FIELDS.index("last_ts")
        payload = []
        for row in rows:
            values = list(row)
            for i in (first, last):
                if isinstance(values[i], str):
                    values[i] = datetime.fromisoformat(values[i]).replace(tzinfo=UTC)
            payload.append(tuple(values))
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sessions.upsert_sql("%s"), payload)

    def add_attempt_sessions(self, attempt_id: str, *, cwd: str | None, branch: str | None, commit: str | None,
                             repo: str | None, repo_url: str | None) -> None:
        """Upsert the sessions of a loop attempt's stored usage rows, at the attempt's place."""
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(sessions.attempt_sql()), {"attempt_id": attempt_id, "cwd": cwd, "branch": branch,
                                                        "commit": commit, "repo": repo, "repo_url": repo_url})

    def add_spans(self, rows: list[dict[str, Any]]) -> int:
        return self._insert_ignore(models.Span.__table__, rows, ["trace_id", "span_id"])  # type: ignore[attr-defined]

    def save(self, *objs: Any) -> None:
        with self.session() as s:
            for obj in objs:
                s.merge(obj)
            s.commit()

    def get(self, model: type, key: Any) -> Any:
        with self.session() as s:
            return s.get(model, key)

    def count(self, model: type) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model.__table__)).scalar_one())  # type: ignore[attr-defined]

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"no driver for {url.split(':', 1)[0]}: {exc.name} is not installed",
            hint="pip install 'loopmeter[postgres]'",
        ) from exc


def open_store(url: str | None = None, *, migrate: bool = True) -> Store:
    """Open (and migrate) the store at `url`, or at the configured LOOPMETER_DB_URL."""
    if url is None:
        from loopmeter.config import load_settings

        url = load_settings().db_url
    engine = make_engine(url)
    try:
        if migrate:
            with engine.begin() as conn:
                migrations.migrate(conn)
    except OperationalError as exc:
        from loopmeter.config import mask_url

        msg = str(exc.orig) if exc.orig is not None else str(exc)
        hint = "another loopmeter may be writing; try again" if "locked" in msg else "check LOOPMETER_DB_URL"
        raise StoreError(f"cannot open the store at {mask_url(url)}: {msg}", hint=hint) from exc
    return Store(engine)


_default: Store | None = None
_default_lock = threading.Lock()


def default_store() -> Store:
    """The process-wide store for the configured URL (opened once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = open_store()
        return _default


def insert_rows(store: Store, model: type, rows: list[dict[str, Any]]) -> None:
    """Plain bulk insert (no conflict handling) for seeding and benchmarks."""
    if rows:
        with store.engine.begin() as conn:
            conn.execute(insert(model.__table__), rows)  # type: ignore[attr-defined]
