import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, select

from loopmeter.records import UsageRow
from loopmeter.store import SCHEMA_VERSION, Attempt, Run, Usage, open_store
from tests.conftest import FIXTURES


def _rows():
    ts = datetime(2026, 11, 9, 10, 0, 1, tzinfo=UTC)
    return [
        UsageRow(key="anthropic-req:req_1", source="claude-code-log", ts=ts, model="claude-sonnet-4-5",
                 input_tokens=4, cache_read_tokens=52000, cache_write_tokens=1800, cache_write_1h_tokens=1800,
                 output_tokens=310, cost_usd=0.031062, cost_source="calculated", request_id="req_1"),
        UsageRow(key="codex:s1:1", source="codex-log", ts=ts, model="gpt-5-codex", input_tokens=2750,
                 cache_read_tokens=750, output_tokens=425, reasoning_tokens=275),
    ]


def _round_trip(store):
    assert store.add_usage(_rows()) == 2
    assert store.add_usage(_rows()) == 0, "the same keys must never be counted twice"
    run = Run(id="01JRUN", task="fix it", status="running", started_at=datetime(2026, 11, 9, tzinfo=UTC))
    store.save(run, Attempt(id="01JRUN-claude", run_id="01JRUN", agent="claude-code", cost_usd=0.5))
    with store.session() as s:
        usage = s.exec(select(Usage).order_by(Usage.key)).all()
        assert [u[0].key for u in usage] == ["anthropic-req:req_1", "codex:s1:1"]
        first = usage[0][0]
        assert first.cache_write_1h_tokens == 1800 and first.cost_usd == pytest.approx(0.031062)
        assert first.ts == datetime(2026, 11, 9, 10, 0, 1, tzinfo=UTC)
        assert usage[1][0].cost_usd is None and usage[1][0].cost_source == "unpriced"
    assert store.get(Run, "01JRUN").task == "fix it"
    assert store.get(Attempt, "01JRUN-claude").cost_usd == 0.5
    assert store.schema_version() == SCHEMA_VERSION


def test_sqlite_round_trip_dedups_and_keeps_unpriced_as_null(store):
    _round_trip(store)
    assert store.dialect == "sqlite"
    with store.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert mode == "wal" and timeout >= 5000


def test_postgres_round_trip(pg_store):
    assert pg_store.dialect == "postgresql"
    _round_trip(pg_store)


def test_migrate_from_empty_creates_every_table(sqlite_url):
    store = open_store(sqlite_url)
    names = set(inspect(store.engine).get_table_names())
    assert {"usage", "run", "attempt", "span", "audit", "eval_result", "ingest_cursor", "outcome"} <= names
    assert store.schema_version() == SCHEMA_VERSION


def _columns(engine):
    insp = inspect(engine)
    return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in insp.get_table_names()}


def _indexes(engine):
    insp = inspect(engine)
    return {t: sorted(i["name"] for i in insp.get_indexes(t)) for t in insp.get_table_names()}


def test_migrate_from_schema_1_matches_a_fresh_store_and_keeps_rows(tmp_path, sqlite_url):
    old = tmp_path / "v1.db"
    conn = sqlite3.connect(old)
    conn.executescript((FIXTURES / "store" / "schema_v1.sql").read_text())
    conn.close()
    assert "price_table_sha256" not in {r[1] for r in sqlite3.connect(old).execute("PRAGMA table_info(usage)")}

    migrated = open_store(f"sqlite:///{old}")
    fresh = open_store(sqlite_url)
    assert _columns(migrated.engine) == _columns(fresh.engine)
    assert migrated.schema_version() == SCHEMA_VERSION
    with migrated.session() as s:
        row = s.exec(select(Usage)).one()[0]
    assert row.key == "v1-row" and row.output_tokens == 20 and row.price_table_sha256 is None
    # schema 3: the old rows are summed into the hourly rollup, and the unused indexes are gone
    assert _indexes(migrated.engine) == _indexes(fresh.engine)
    with migrated.engine.connect() as c:
        assert c.exec_driver_sql("SELECT sum(calls), sum(output) FROM usage_hour").one() == (1, 20)
    # opening again applies nothing and changes nothing
    assert open_store(f"sqlite:///{old}").schema_version() == SCHEMA_VERSION


def test_postgres_migrates_from_empty(pg_store):
    names = set(inspect(pg_store.engine).get_table_names())
    assert {"usage", "audit", "eval_result", "outcome"} <= names


def test_a_postgres_store_from_before_attempt_error_kinds_gets_the_column_and_keeps_its_rows(pg_store):
    # a store at migration 0007 (the column and its record of 0008 taken away), holding an errored attempt
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE attempt DROP COLUMN error_kind")
        conn.exec_driver_sql("DELETE FROM loopmeter_migrations WHERE name = '0008_attempt_error_kind'")
        conn.exec_driver_sql("INSERT INTO attempt (id, run_id, agent, role, status, stop_reason, iterations, "
                             "input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
                             "unpriced_calls) VALUES ('a-old', 'r-old', 'nop', 'primary', 'error', "
                             "'auth: an old message', 1, 0, 0, 0, 0, 0, 0)")
    url = pg_store.engine.url.render_as_string(hide_password=False)
    migrated = open_store(url)
    try:
        assert migrated.schema_version() == SCHEMA_VERSION
        assert "error_kind" in {c["name"] for c in inspect(migrated.engine).get_columns("attempt")}
        old = migrated.get(Attempt, "a-old")
        from loopmeter.vocab import ErrorKind

        # its kind was never kept: read as infra, as before, whatever its message says
        assert old.error_kind is None and ErrorKind.of_attempt(old.status, old.error_kind) is ErrorKind.INFRA
    finally:
        migrated.dispose()


def test_a_store_from_a_newer_loopmeter_is_refused(sqlite_url):
    from loopmeter.errors import StoreError

    store = open_store(sqlite_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO loopmeter_migrations VALUES ('9999_future', '2030-01-01 00:00:00')")
    with pytest.raises(StoreError, match="newer loopmeter"):
        open_store(sqlite_url)


def _select(store, sql: str) -> list[tuple]:
    """Rows of a query on the store's SQLite file, through a connection of its own."""
    conn = sqlite3.connect(store.engine.url.database)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_rows_round_trip_whatever_their_shared_values_hold(store):
    # Rows are inserted in groups whose shared values (source, user, price table...) are
    # written into the statement: quotes, SQL-looking text, a NUL and a float must all come
    # back exactly as given, and a repeated key must still be ignored.
    ts = datetime(2026, 11, 9, 10, 0, 1, tzinfo=UTC)
    odd = ["o'brien", "x'); DROP TABLE usage; --", "nul\x00inside", "ünï ☃", "", None]
    rows = []
    for i, user in enumerate(odd):
        rows.append(UsageRow(key=f"k{i}", source="claude-code-log", ts=ts, user=user, agent=user, input_tokens=i,
                             latency_ms=12.5 if i % 2 else None, run_id=user, cost_source="unpriced"))
    rows.append(UsageRow(key="k0", source="claude-code-log", ts=ts, user="someone else", input_tokens=99))
    assert store.add_usage(rows) == len(odd)
    got = _select(store, "SELECT key, user, agent, input_tokens, latency_ms, run_id FROM usage ORDER BY key")
    (hours,) = _select(store, "SELECT sum(calls), sum(input) FROM usage_hour")
    assert got == [(f"k{i}", u, u, i, 12.5 if i % 2 else None, u) for i, u in enumerate(odd)]
    assert hours == (len(odd), sum(range(len(odd))))


def test_a_key_repeated_in_one_batch_keeps_its_first_row(store):
    # rows are inserted in groups of shared values; the first row of a key still wins, as
    # inserting them one by one would have it, and the rollup counts only what was kept
    ts = datetime(2026, 11, 9, 10, 0, 1, tzinfo=UTC)
    rows = [UsageRow(key="j", source="otlp", ts=ts, user="a", input_tokens=1),
            UsageRow(key="k", source="otlp", ts=ts, user="b", input_tokens=100),
            UsageRow(key="k", source="otlp", ts=ts, user="a", input_tokens=5)]
    assert store.add_usage(rows) == 2
    got = _select(store, "SELECT key, user, input_tokens FROM usage ORDER BY key")
    (hours,) = _select(store, "SELECT sum(calls), sum(input) FROM usage_hour")
    assert got == [("j", "a", 1), ("k", "b", 100)] and hours == (2, 101)


def test_rows_many_to_a_statement_keep_their_order_and_count_only_new_keys(store):
    # Rows go MULTI_ROWS to a statement, the rest one by one: a batch of two full statements
    # and a tail, written again with some keys already stored, adds exactly the new ones and
    # the rollup sums exactly those.
    from loopmeter.store.sqlite_writer import MULTI_ROWS

    ts = datetime(2026, 11, 9, 10, 0, 1, tzinfo=UTC)
    n = 2 * MULTI_ROWS + 7

    def rows(keys: range) -> list[UsageRow]:
        return [UsageRow(key=f"m{i:04d}", source="codex-log", ts=ts + timedelta(seconds=i), input_tokens=i,
                         output_tokens=1) for i in keys]

    assert store.add_usage(rows(range(n))) == n
    assert store.add_usage(rows(range(n - 30, n + MULTI_ROWS + 3))) == MULTI_ROWS + 3
    total = n + MULTI_ROWS + 3
    got = _select(store, "SELECT key, input_tokens FROM usage ORDER BY id")
    (hours,) = _select(store, "SELECT sum(calls), sum(input), sum(output) FROM usage_hour")
    assert got == [(f"m{i:04d}", i) for i in range(total)]  # stored in the order given
    assert hours == (total, sum(range(total)), total)


def test_ingest_writer_checkpoints_beside_its_commits_and_at_close(store):
    # The ingest writer copies its WAL into the database from a thread of its own while it
    # goes on committing, and what is left at close, also while another connection (a
    # dashboard) keeps the store open: the database file then holds every row by itself.
    from loopmeter.store.sqlite_writer import SqliteUsageWriter, params_of

    path = store.engine.url.database
    ts = datetime(2026, 11, 9, 10, 0, 1, tzinfo=UTC)
    reader = sqlite3.connect(path)
    reader.execute("SELECT count(*) FROM usage").fetchone()
    writer = SqliteUsageWriter(path, checkpoint_rows=100)
    seen = []
    for b in range(40):
        rows = [UsageRow(key=f"c{b}-{i}", source="codex-log", ts=ts, input_tokens=1) for i in range(60)]
        assert writer.write(params_of(rows), []) == 60
        seen.append(reader.execute("SELECT count(*) FROM usage").fetchone()[0])
    writer.close()
    assert seen == [60 * (b + 1) for b in range(40)]  # each commit whole, in order
    file_only = sqlite3.connect(f"file:{path}?immutable=1", uri=True)  # reads the file, not the WAL
    try:
        assert file_only.execute("SELECT count(*), sum(input_tokens) FROM usage").fetchone() == (2400, 2400)
        assert file_only.execute("SELECT sum(calls) FROM usage_hour").fetchone() == (2400,)
    finally:
        file_only.close()
        reader.close()


def test_a_row_missing_a_required_value_is_an_error_not_a_silent_skip(store):
    # rows are inserted with INSERT OR IGNORE (no statement journal): a row without its key or
    # source must fail the batch loudly rather than vanish
    ts = datetime(2026, 11, 9, 10, 0, 1, tzinfo=UTC)
    good = UsageRow(key="ok", source="otlp", ts=ts, input_tokens=1)
    for bad in (UsageRow(key=None, source="otlp", ts=ts), UsageRow(key="k", source=None, ts=ts)):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="without a"):
            store.add_usage([good, bad])
    assert _select(store, "SELECT count(*) FROM usage") == [(0,)]  # the batch is not half-stored


def test_the_wal_stays_bounded_while_commits_follow_each_other(store):
    # Back-to-back commits (a full queue of batches) never leave the checkpoint thread a
    # moment to reach the last frame, so the WAL would only grow: the writer's own
    # checkpoint past its threshold keeps it near that size (1 MB here; 64 MB by default).
    import os
    import random

    from loopmeter.store.sqlite_writer import SqliteUsageWriter, params_of, prepare

    path = store.engine.url.database
    rng = random.Random(7)
    ts = datetime(2026, 11, 9, tzinfo=UTC)
    batches = [prepare(params_of([
        UsageRow(key=f"k{rng.getrandbits(64):016x}", source="codex-log",
                 ts=ts + timedelta(seconds=rng.randrange(10**6)), input_tokens=1) for _ in range(2000)]))
        for _ in range(30)]
    writer = SqliteUsageWriter(path, checkpoint_rows=2000, autocheckpoint_bytes=1 << 20)
    peak = 0
    for groups, hours in batches:
        writer.write_groups(groups, hours, [])
        peak = max(peak, os.path.getsize(path + "-wal"))
    writer.close()
    assert os.path.getsize(path) > 5 << 20  # 60k rows: the store is several times the threshold
    assert peak < 8 << 20, f"WAL reached {peak / 1e6:.0f} MB"
