"""The SQLite store made without SQLAlchemy (store/sqlite_schema.sql) is the one open_store makes."""

import sqlite3
import threading

from loopmeter.store import open_store, sqlite_schema
from tests.conftest import FIXTURES


def _master(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    finally:
        conn.close()


def test_the_schema_file_makes_what_the_migrations_make(tmp_path):
    fast, slow = tmp_path / "fast.db", tmp_path / "slow.db"
    assert sqlite_schema.ready(fast)
    open_store(f"sqlite:///{slow}").dispose()
    assert _master(fast) == _master(slow), \
        "the models or migrations changed: run `python -m loopmeter.store.sqlite_schema` to write sqlite_schema.sql"
    store = open_store(f"sqlite:///{fast}")  # finds every migration applied
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.dispose()
    assert sqlite_schema.ready(fast)  # current: nothing to do
    for db in (fast, slow):  # both ways make the same page size; an older store keeps its own
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA page_size").fetchone()[0] == sqlite_schema.PAGE_SIZE
        conn.close()


def test_an_older_store_is_left_to_the_migrations(tmp_path):
    old = tmp_path / "v1.db"
    conn = sqlite3.connect(old)
    conn.executescript((FIXTURES / "store" / "schema_v1.sql").read_text())
    conn.close()
    assert not sqlite_schema.ready(old)
    open_store(f"sqlite:///{old}").dispose()
    assert sqlite_schema.ready(old)
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096  # as it was made
    conn.close()


def test_threads_creating_the_same_new_store_make_it_once(tmp_path):
    db = tmp_path / "new.db"
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(sqlite_schema.ready(db))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 6
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM loopmeter_migrations").fetchone()[0] == len(sqlite_schema.MIGRATION_NAMES)
    conn.close()
