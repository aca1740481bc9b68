"""Append-only list of named migrations, applied in order on every open.

`0001_initial` creates any missing table from the current models, so a fresh
database is complete at once; each later migration brings a database written by
an older loopmeter up to date and is a no-op where its change is already there.
Never edit or reorder an applied migration: append a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, inspect, text
from sqlmodel import SQLModel

from loopmeter.store import models, sqlite_schema


def _add_column(conn: Connection, table: str, column: str, ddl_type: str) -> None:
    cols = {c["name"] for c in inspect(conn).get_columns(table)}
    if column not in cols:
        conn.execute(text(f'ALTER TABLE "{table}" ADD COLUMN {column} {ddl_type}'))


def _create_missing_indexes(conn: Connection) -> None:
    existing = set(inspect(conn).get_table_names())
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in existing:  # a later migration creates it, with its indexes
            continue
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def m0001_initial(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in models.ALL_TABLES])  # type: ignore[attr-defined]


def m0002_price_hash_and_iterations(conn: Connection) -> None:
    # Schema 1 had no price-table hash on usage rows and no attempt-level time to signal.
    _add_column(conn, "usage", "price_table_sha256", "VARCHAR(64)")
    _add_column(conn, "attempt", "time_to_signal_s", "FLOAT")
    _add_column(conn, "attempt", "iterations_to_green", "INTEGER")
    _create_missing_indexes(conn)


def m0003_usage_hour(conn: Connection) -> None:
    # The hourly rollup kept by Store.add_usage, filled here from the rows already stored;
    # and four usage indexes that slowed every ingest more than they helped any query.
    from loopmeter.store import rollup

    models.UsageHour.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
    for name in ("ix_usage_source_ts", "ix_usage_model", "ix_usage_session", "ix_usage_request", "ix_usage_run"):
        conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    _create_missing_indexes(conn)  # ix_usage_run again, now partial: only rows with a run id
    rollup.rebuild(conn, conn.dialect.name)


def m0004_run_active_time(conn: Connection) -> None:
    # A run's wall-time budget counted the hours it sat waiting for an approval or crashed:
    # the time it has been driven is kept on the run instead.
    _add_column(conn, "run", "active_s", "FLOAT")


def _create(conn: Connection, *tables: type[SQLModel]) -> None:
    for table in tables:
        table.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
        for index in table.__table__.indexes:  # type: ignore[attr-defined]
            index.create(conn, checkfirst=True)


def m0005_sessions(conn: Connection) -> None:
    # where each agent session worked (cwd, branch, repository), once per session
    _create(conn, models.Session)


def m0006_pull_requests(conn: Connection) -> None:
    # code-host outcomes: pull requests, commits on default branches, sync cursors
    _create(conn, models.PullRequest, models.RepoCommit, models.SyncCursor)


def m0007_vendor_usage(conn: Connection) -> None:
    # usage and charges read from the vendors' admin APIs
    _create(conn, models.VendorUsage)


def m0008_attempt_error_kind(conn: Connection) -> None:
    # what went wrong in an attempt that ended error, kept apart from its stop reason (which is for
    # people); older attempts keep NULL and are read as infra (vocab.ErrorKind.of_attempt)
    _add_column(conn, "attempt", "error_kind", "VARCHAR(32)")


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", m0001_initial),
    ("0002_price_hash_and_iterations", m0002_price_hash_and_iterations),
    ("0003_usage_hour", m0003_usage_hour),
    ("0004_run_active_time", m0004_run_active_time),
    ("0005_sessions", m0005_sessions),
    ("0006_pull_requests", m0006_pull_requests),
    ("0007_vendor_usage", m0007_vendor_usage),
    ("0008_attempt_error_kind", m0008_attempt_error_kind),
]
SCHEMA_VERSION = len(MIGRATIONS)
# a current SQLite store is recognised, and a new one created, without this module
assert tuple(name for name, _ in MIGRATIONS) == sqlite_schema.MIGRATION_NAMES, \
    "append the new migration's name to sqlite_schema.MIGRATION_NAMES, then run python -m loopmeter.store.sqlite_schema"


def applied(conn: Connection) -> list[str]:
    if not inspect(conn).has_table("loopmeter_migrations"):
        return []
    return [r[0] for r in conn.execute(text("SELECT name FROM loopmeter_migrations ORDER BY name"))]


def migrate(conn: Connection) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    models.Meta.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
    done = set(applied(conn))
    known = {name for name, _ in MIGRATIONS}
    newer = done - known
    if newer:
        from loopmeter.errors import StoreError

        raise StoreError(
            f"the database was written by a newer loopmeter (migrations {sorted(newer)})",
            hint="upgrade loopmeter, or point LOOPMETER_DB_URL at another database",
        )
    now_applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        fn(conn)
        conn.execute(
            models.Meta.__table__.insert().values(name=name, applied_at=datetime.now(UTC))  # type: ignore[attr-defined]
        )
        now_applied.append(name)
    return now_applied
