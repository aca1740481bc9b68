"""PostgreSQL bulk writes (COPY, set-based rollup): the same rows and hours as SQLite, two
workers writing side by side, repeated keys across files counted once."""

from __future__ import annotations

import shutil
from datetime import datetime
from decimal import Decimal

import pytest

from loopmeter.store import open_store
from loopmeter.telemetry.ingest import discover, load_cursors, plan, run
from tests.fixtures.logs.corpus import generate

HOURS = ("SELECT hour, agent, model, provider, source, project, \"user\", cost_source, calls, unpriced, "
         "cost, input, cache_read, cache_write, output, reasoning FROM usage_hour")
ROWS = ("SELECT key, source, model, session_id, input_tokens, cache_read_tokens, cache_write_tokens, "
        "output_tokens, reasoning_tokens, cost_usd, cost_source FROM usage")
CURSORS = 'SELECT path, source, inode, size, "offset", mtime, malformed_lines, state FROM ingest_cursor'
SESSIONS = ('SELECT source, session_id, agent, "user", cwd, branch, "commit", repo, repo_url, first_ts, last_ts '
            "FROM session")


def _plain(v):
    """A value as both stores compare: numbers as rounded floats (PostgreSQL sums are Decimal),
    times as SQLite's naive UTC text."""
    if isinstance(v, int | float | Decimal) and not isinstance(v, bool):
        return round(float(v), 9)
    if isinstance(v, datetime):
        from loopmeter.store.sqlite_writer import sqlite_time

        return sqlite_time(v)
    return v


def _all(store, sql):
    with store.engine.connect() as conn:
        return sorted((tuple(_plain(v) for v in row) for row in conn.exec_driver_sql(sql).all()), key=repr)


@pytest.mark.timeout(300)
def test_postgresql_stores_what_sqlite_stores_with_two_workers_writing(tmp_path, pg_store, sqlite_url):
    expected = generate(tmp_path / "corpus", mb=3, file_mb=0.5)
    # a resumed session's log repeats calls another file has: both files are read at once
    some = sorted((tmp_path / "corpus").rglob("*.jsonl"))[0]
    shutil.copy(some, some.with_name("repeated-" + some.name))
    calls = sum(t.calls for t in expected.claude.values()) + sum(t.calls for t in expected.codex.values())
    pg_url = pg_store.engine.url.render_as_string(hide_password=False)
    files = discover(paths=[tmp_path / "corpus"])
    lite = open_store(sqlite_url)
    try:
        for store, url in ((pg_store, pg_url), (lite, sqlite_url)):
            report = run(store, url, plan(files, load_cursors(url, store)), workers=2, split_bytes=64 << 10,
                         pool_min_bytes=0, batch_rows=40)
            assert report.rows_added == calls
            again = run(store, url, plan(files, load_cursors(url, store)), workers=2, pool_min_bytes=0)
            assert again.rows_added == 0 and again.files_read == 0
        assert _all(pg_store, ROWS) == _all(lite, ROWS)
        assert len(_all(pg_store, ROWS)) == calls
        assert _all(pg_store, HOURS) == _all(lite, HOURS)
        assert _all(pg_store, SESSIONS) == _all(lite, SESSIONS)
        assert len(_all(pg_store, CURSORS)) == len(files)
        assert _all(pg_store, CURSORS) == _all(lite, CURSORS)
    finally:
        lite.dispose()


def test_postgresql_add_usage_skips_stored_and_repeated_keys(pg_store):
    from datetime import UTC, datetime

    from loopmeter.records import UsageRow

    def row(key, minute, tokens):
        return UsageRow(key=key, source="otlp", ts=datetime(2026, 11, 9, 10, minute, tzinfo=UTC), agent="a",
                        model="m", input_tokens=tokens, output_tokens=1)

    with pg_store.engine.begin() as conn:  # a server whose sessions are not in UTC
        conn.exec_driver_sql("SELECT set_config('timezone', 'America/New_York', false)")
        name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f"ALTER DATABASE {name} SET timezone = 'America/New_York'")
    pg_store.engine.dispose()
    assert pg_store.add_usage([row("k1", 0, 10), row("k2", 59, 20), row("k1", 1, 99)]) == 2
    assert pg_store.add_usage([row("k2", 5, 50), row("k3", 0, 30)]) == 1
    assert pg_store.add_usage([]) == 0
    with pg_store.engine.connect() as conn:
        hours = conn.exec_driver_sql("SELECT hour, calls, input FROM usage_hour").all()
        ts = conn.exec_driver_sql("SELECT ts FROM usage WHERE key = 'k2'").scalar_one()
    assert [tuple(h) for h in hours] == [("2026-11-09 10", 3, 60)]  # the first k1 (10), k2 (20), k3 (30)
    assert ts == datetime(2026, 11, 9, 10, 59, tzinfo=UTC)  # whatever the session's time zone


@pytest.mark.timeout(120)
def test_a_worker_whose_writes_are_refused_stops_the_ingest_with_the_stores_error(tmp_path, pg_store):
    generate(tmp_path / "corpus", mb=2, file_mb=0.25)
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'store refuses'; "
                             "END $$ LANGUAGE plpgsql")
        conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON usage FOR EACH ROW EXECUTE FUNCTION refuse()")
    url = pg_store.engine.url.render_as_string(hide_password=False)
    files = discover(paths=[tmp_path / "corpus"])
    with pytest.raises(Exception, match="store refuses"):
        run(pg_store, url, plan(files, load_cursors(url, pg_store)), workers=2, split_bytes=64 << 10,
            pool_min_bytes=0, batch_rows=20)
    with pg_store.engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM usage").scalar_one() == 0
        conn.exec_driver_sql("DROP TRIGGER refuse ON usage")
    report = run(pg_store, url, plan(files, load_cursors(url, pg_store)), workers=2, split_bytes=64 << 10,
                 pool_min_bytes=0, batch_rows=20)
    assert report.rows_added > 0 and report.errors == {}


@pytest.mark.timeout(120)
def test_a_batch_whose_cursors_are_refused_leaves_none_of_its_rows_or_sessions(tmp_path, pg_store):
    """Rows, sessions and cursors of a batch are one transaction: a refused cursor leaves no
    rows counted without a cursor saying they were read."""
    generate(tmp_path / "corpus", mb=1, file_mb=0.25)
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'no cursors'; "
                             "END $$ LANGUAGE plpgsql")
        conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON ingest_cursor FOR EACH ROW "
                             "EXECUTE FUNCTION refuse()")
    url = pg_store.engine.url.render_as_string(hide_password=False)
    files = discover(paths=[tmp_path / "corpus"])
    with pytest.raises(Exception, match="no cursors"):
        run(pg_store, url, plan(files, load_cursors(url, pg_store)), workers=1)
    with pg_store.engine.connect() as conn:
        stored = [conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()
                  for t in ("usage", "usage_hour", "session", "ingest_cursor")]
    assert stored == [0, 0, 0, 0]


@pytest.mark.timeout(300)
def test_a_new_postgresql_store_is_created_while_two_workers_read(tmp_path, pg_empty_url):
    expected = generate(tmp_path / "corpus", mb=2, file_mb=0.5)
    calls = sum(t.calls for t in expected.claude.values()) + sum(t.calls for t in expected.codex.values())
    files = discover(paths=[tmp_path / "corpus"])
    opened = []

    def open_it():  # as `loopmeter usage` does on a new database: called once the workers read
        opened.append(open_store(pg_empty_url))
        return opened[-1]

    try:
        report = run(open_it, pg_empty_url, plan(files, None), workers=2, split_bytes=64 << 10, pool_min_bytes=0,
                     batch_rows=40)
        (store,) = opened
        assert report.rows_added == calls and len(_all(store, ROWS)) == calls
        assert len(_all(store, CURSORS)) == len(files)
    finally:
        for s in opened:
            s.dispose()


@pytest.mark.timeout(120)
def test_a_new_store_that_cannot_be_made_stops_the_workers_waiting_for_it(tmp_path, pg_empty_url):
    import multiprocessing

    from loopmeter.errors import StoreError

    generate(tmp_path / "corpus", mb=1, file_mb=0.25)
    files = discover(paths=[tmp_path / "corpus"])

    def cannot_open():
        raise StoreError("the store could not be made")

    with pytest.raises(StoreError, match="could not be made"):
        run(cannot_open, pg_empty_url, plan(files, None), workers=2, split_bytes=64 << 10, pool_min_bytes=0,
            batch_rows=40)
    assert multiprocessing.active_children() == []  # no worker is left waiting for the store
    import psycopg

    with psycopg.connect(pg_empty_url) as conn:  # and none wrote anything
        assert conn.execute("SELECT to_regclass('usage')").fetchone() == (None,)
