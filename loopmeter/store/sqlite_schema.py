"""A new SQLite store created, and an existing one checked, without SQLAlchemy.

`loopmeter usage` on a SQLite store needs neither SQLAlchemy nor the migrations when the
store is current: importing them cost its first call ~0.35 s of CPU. `sqlite_schema.sql`
holds the statements a fresh `open_store` leaves in `sqlite_master`, in order; a test checks
that a store made from it is identical, and `python -m loopmeter.store.sqlite_schema`
writes the file again after a model or migration changes.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

# the names in loopmeter.store.migrations.MIGRATIONS, in order (checked there at import)
MIGRATION_NAMES = (
    "0001_initial", "0002_price_hash_and_iterations", "0003_usage_hour", "0004_run_active_time",
    "0005_sessions", "0006_pull_requests", "0007_vendor_usage", "0008_attempt_error_kind",
)
SCHEMA_FILE = Path(__file__).with_name("sqlite_schema.sql")


# Pages of 16 KiB for a new store: the usage key index is written in random order, and with
# 4 KiB pages an ingest wrote four times as many WAL frames (cold `usage` on 1 GB of logs,
# median of 9: 1.34 -> 1.29 s). An existing store keeps the size it was made with.
PAGE_SIZE = 16384


def _statements() -> list[str]:
    return [s.strip() for s in SCHEMA_FILE.read_text().split(";\n") if s.strip()]


def ready(path: Path, *, busy_timeout_ms: int = 10000) -> bool:
    """Make sure the SQLite store at `path` is current: create it from the schema file when it
    does not exist or is empty. False when it holds an older (or newer) schema: open_store then
    migrates it (or refuses it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes on a new, empty file
        conn.execute("BEGIN IMMEDIATE")  # two processes creating the same new store take turns
        try:
            has_table = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'loopmeter_migrations'").fetchone()[0]
            if has_table:
                names = tuple(r[0] for r in conn.execute("SELECT name FROM loopmeter_migrations ORDER BY name"))
                conn.execute("ROLLBACK")
                return names == MIGRATION_NAMES
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                conn.execute("ROLLBACK")
                return False  # tables, but not ours: let open_store say what is wrong
            for statement in _statements():
                conn.execute(statement)
            now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
            conn.executemany("INSERT INTO loopmeter_migrations (name, applied_at) VALUES (?, ?)",
                             [(name, now) for name in MIGRATION_NAMES])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("PRAGMA journal_mode=WAL")
        return True
    finally:
        conn.close()


def dump(path: Path) -> list[str]:
    """The CREATE statements of the store at `path`, in the order SQLite recorded them."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")]
    finally:
        conn.close()


def write_schema_file() -> None:
    """Regenerate sqlite_schema.sql from a store made by open_store (needs SQLAlchemy)."""
    import tempfile

    from loopmeter.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "fresh.db"
        open_store(f"sqlite:///{db}").dispose()
        SCHEMA_FILE.write_text(";\n".join(dump(db)) + ";\n")


if __name__ == "__main__":
    write_schema_file()
    print(f"wrote {SCHEMA_FILE}")
