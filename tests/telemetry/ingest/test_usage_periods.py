"""Usage per day, week, month, session and 5-hour block (loopmeter.analytics.usage) on seeded rows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from loopmeter.analytics.usage import Query, resolve_tz, usage_report
from loopmeter.errors import LoopmeterError
from loopmeter.records import UsageRow
from loopmeter.vocab import CostSource


def _row(key: str, ts: str, *, model: str = "m1", source: str = "claude-code-log", inp: int = 10, out: int = 5,
         cw: int = 0, cr: int = 0, rs: int = 0, cost: float | None = 1.0, session: str = "s1",
         project: str = "/home/dev/api") -> UsageRow:
    return UsageRow(key=key, source=source, ts=datetime.fromisoformat(ts), model=model, session_id=session,
                    project=project, input_tokens=inp, output_tokens=out, cache_write_tokens=cw,
                    cache_read_tokens=cr, reasoning_tokens=rs, cost_usd=cost,
                    cost_source=CostSource.CALCULATED if cost is not None else CostSource.UNPRICED)


@pytest.fixture
def dst_store(store):
    # Paris leaves summer time on 2026-10-25 at 01:00 UTC (UTC+2 -> UTC+1).
    store.add_usage([
        _row("a", "2026-10-24T22:30:00+00:00", inp=1),   # Paris 10-25 00:30 (UTC+2)
        _row("b", "2026-10-25T22:30:00+00:00", inp=2),   # Paris 10-25 23:30 (UTC+1)
        _row("c", "2026-10-25T23:30:00+00:00", inp=4, model="m2", source="codex-log", cost=None,
             session="s2", project="/home/dev/svc"),       # Paris 10-26 00:30
    ])
    return store


def _days(report) -> dict[str, int]:
    return {r.label: r.totals.input_tokens for r in report.rows}


def test_days_follow_the_time_zone_across_a_daylight_saving_change(dst_store):
    paris = usage_report(dst_store, Query(period="daily", tz="Europe/Paris"))
    assert _days(paris) == {"2026-10-25": 3, "2026-10-26": 4}
    utc = usage_report(dst_store, Query(period="daily", tz="UTC"))
    assert _days(utc) == {"2026-10-24": 1, "2026-10-25": 6}


def test_the_same_report_from_a_sqlite_url_without_sqlalchemy(dst_store, sqlite_url):
    via_url = usage_report(sqlite_url, Query(period="daily", tz="Europe/Paris"))
    assert _days(via_url) == {"2026-10-25": 3, "2026-10-26": 4}


def test_weeks_start_on_monday_and_months_are_calendar_months(dst_store):
    weekly = usage_report(dst_store, Query(period="weekly", tz="Europe/Paris"))
    assert _days(weekly) == {"2026-10-19": 3, "2026-10-26": 4}  # 10-25 is a Sunday
    monthly = usage_report(dst_store, Query(period="monthly", tz="Europe/Paris"))
    assert _days(monthly) == {"2026-10": 7}
    out = weekly.as_json()
    assert [r["week"] for r in out["weekly"]] == ["2026-10-19", "2026-10-26"]
    assert monthly.as_json()["monthly"][0]["month"] == "2026-10"


def test_since_until_are_local_dates_inclusive(dst_store):
    q = Query(period="daily", tz="Europe/Paris", since=date(2026, 10, 26), until=date(2026, 10, 26))
    assert _days(usage_report(dst_store, q)) == {"2026-10-26": 4}
    q = Query(period="daily", tz="UTC", until=date(2026, 10, 24))
    assert _days(usage_report(dst_store, q)) == {"2026-10-24": 1}


def test_source_and_project_filters(dst_store):
    codex = usage_report(dst_store, Query(period="daily", tz="UTC", sources=["codex"]))
    assert codex.totals.input_tokens == 4
    both = usage_report(dst_store, Query(period="daily", tz="UTC", sources=["codex", "claude-code"]))
    assert both.totals.input_tokens == 7
    api = usage_report(dst_store, Query(period="daily", tz="UTC", project="dev/api"))
    assert api.totals.input_tokens == 3
    with pytest.raises(LoopmeterError):
        usage_report(dst_store, Query(sources=["windsurf"]))


def test_unpriced_calls_are_counted_beside_the_cost_never_zero(dst_store):
    report = usage_report(dst_store, Query(period="daily", tz="Europe/Paris")).as_json()
    day = {r["date"]: r for r in report["daily"]}
    assert day["2026-10-26"]["cost_usd"] is None  # only an unpriced call that day
    assert day["2026-10-26"]["unpriced_calls"] == 1
    assert day["2026-10-25"]["cost_usd"] == 2.0
    assert report["totals"]["cost_usd"] == 2.0
    assert report["totals"]["unpriced_calls"] == 1


def test_json_shape_is_the_documented_one(dst_store):
    out = usage_report(dst_store, Query(period="daily", tz="UTC")).as_json()
    assert set(out) == {"daily", "totals", "timezone"}
    fields = {"input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens", "reasoning_tokens",
              "cost_usd", "unpriced_calls", "calls", "cache_hit_ratio"}
    row = out["daily"][1]
    assert set(row) == fields | {"date", "models", "breakdown"}
    assert row["models"] == ["m1", "m2"]
    assert {b["source"] for b in row["breakdown"]} == {"claude-code-log", "codex-log"}
    assert all(set(b) == fields | {"model", "source"} for b in row["breakdown"])
    assert set(out["totals"]) == fields


def test_cache_hit_ratio_is_cache_read_over_all_input(store):
    store.add_usage([_row("x", "2026-11-01T10:00:00+00:00", inp=100, cw=300, cr=600)])
    out = usage_report(store, Query(period="daily", tz="UTC")).as_json()
    assert out["totals"]["cache_hit_ratio"] == 0.6


def test_sessions_group_calls_with_their_project(dst_store):
    out = usage_report(dst_store, Query(period="session", tz="UTC")).as_json()
    sessions = {r["session"]: r for r in out["session"]}
    assert sessions["s1"]["input_tokens"] == 3
    assert sessions["s1"]["project"] == "/home/dev/api"
    assert sessions["s2"]["project"] == "/home/dev/svc"
    assert sessions["s1"]["first"] == "2026-10-24T22:30:00+00:00"
    assert sessions["s1"]["last"] == "2026-10-25T22:30:00+00:00"


def test_five_hour_blocks_and_the_active_burn_rate(store):
    store.add_usage([
        _row("1", "2026-11-02T10:10:00+00:00", inp=100, out=0),
        _row("2", "2026-11-02T10:50:00+00:00", inp=100, out=0),
        _row("3", "2026-11-02T14:59:00+00:00", inp=100, out=0),   # same block (10:00-15:00)
        _row("4", "2026-11-02T15:10:00+00:00", inp=100, out=0),   # after its end: a new block from 15:00
        _row("5", "2026-11-03T01:20:00+00:00", inp=600, out=0, cost=3.0),  # after 5 idle hours
    ])
    now = datetime(2026, 11, 3, 1, 50, tzinfo=UTC)
    report = usage_report(store, Query(period="blocks", tz="UTC", now=now))
    out = report.as_json()["blocks"]
    assert [(b["start"], b["input_tokens"], b["active"]) for b in out] == [
        ("2026-11-02T10:00:00+00:00", 300, False),
        ("2026-11-02T15:00:00+00:00", 100, False),
        ("2026-11-03T01:00:00+00:00", 600, True),
    ]
    assert out[2]["end"] == "2026-11-03T06:00:00+00:00"
    burn = out[2]["burn_rate"]
    assert burn["tokens_per_minute"] == 20.0  # 600 tokens over the 30 minutes since the first call
    assert burn["cost_per_hour"] == 6.0
    assert burn["remaining_minutes"] == 250.0
    assert burn["projected_tokens"] == 600 + 20 * 250
    assert out[0]["burn_rate"] is None


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(LoopmeterError):
        resolve_tz("Mars/Olympus")


def test_postgres_gives_the_same_days(pg_store):
    pg_store.add_usage([
        _row("a", "2026-10-24T22:30:00+00:00", inp=1),
        _row("b", "2026-10-25T22:30:00+00:00", inp=2),
        _row("c", "2026-10-25T23:30:00+00:00", inp=4),
    ])
    assert _days(usage_report(pg_store, Query(period="daily", tz="Europe/Paris"))) == {"2026-10-25": 3, "2026-10-26": 4}
    blocks = usage_report(pg_store, Query(period="blocks", tz="UTC", now=datetime(2026, 10, 26, tzinfo=UTC)))
    assert [r.totals.input_tokens for r in blocks.rows] == [1, 6]


def _three_weeks() -> list[UsageRow]:
    """Calls every 37 minutes for three weeks across Paris' and New York's summer-time ends."""
    rows = []
    for i in range(900):
        ts = datetime(2026, 10, 15, tzinfo=UTC) + i * (datetime(2026, 1, 1, 0, 37) - datetime(2026, 1, 1))
        rows.append(_row(f"r{i}", ts.isoformat(), model=("m1", "m2", "")[i % 3],
                         source=("claude-code-log", "codex-log")[i % 2], inp=i, out=i % 7, cr=i % 11, rs=i % 5,
                         cost=None if i % 4 == 0 else 0.01 * i, project=("/a", "/b/api")[i % 2],
                         session=f"s{i // 100}-{i % 2}"))  # one project per session
    return rows


def _queries(period: str, tz: str) -> list[Query]:
    return [Query(period=period, tz=tz),
            Query(period=period, tz=tz, since=date(2026, 10, 20), until=date(2026, 10, 30)),
            Query(period=period, tz=tz, sources=["codex"], project="api")]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Adelaide"])
@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_days_from_the_hourly_rollup_equal_days_from_the_rows(store, sqlite_url, tz, period):
    # Kolkata (+5:30) and Adelaide (+10:30) have offsets an hour cannot carry: rows are read.
    store.add_usage(_three_weeks())
    queries = _queries(period, tz)
    from_rollup = [usage_report(sqlite_url, q).as_json() for q in queries]
    with store.engine.begin() as conn:  # a rollup that no longer matches the rows is not used
        conn.exec_driver_sql("DELETE FROM usage_hour WHERE rowid IN (SELECT rowid FROM usage_hour LIMIT 1)")
    from_rows = [usage_report(sqlite_url, q).as_json() for q in queries]
    assert from_rollup == from_rows
    assert from_rows[0]["totals"]["calls"] == 900 and from_rows[1]["totals"]["calls"] < 900


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "Asia/Kolkata"])
def test_postgres_read_with_psycopg_alone_gives_what_the_store_and_sqlite_give(store, sqlite_url, pg_store, tz):
    from loopmeter.store.pg_read import PgReader

    store.add_usage(_three_weeks())
    pg_store.add_usage(_three_weeks())
    reader = PgReader(pg_store.engine.url.render_as_string(hide_password=False))
    try:
        assert reader.schema_current()
        for period in ("daily", "weekly", "monthly", "session", "blocks"):
            for q in _queries(period, tz):
                q.now = datetime(2026, 11, 4, 1, tzinfo=UTC)  # inside the last block
                psycopg_alone = usage_report(reader, q).as_json()
                assert psycopg_alone == usage_report(pg_store, q).as_json() == usage_report(sqlite_url, q).as_json()
                assert psycopg_alone["totals"]["calls"] > 0
    finally:
        reader.close()


def test_hours_a_local_day_begins_inside_are_read_from_the_rows(dst_store, sqlite_url):
    # Kolkata's days begin at 18:30 UTC: the 18:00 hour is read from the calls, other hours from the rollup
    dst_store.add_usage([_row("d", "2026-10-25T18:45:00+00:00", inp=8)])
    with dst_store.engine.begin() as conn:  # same call count, different tokens: tells which was read
        conn.exec_driver_sql("UPDATE usage_hour SET input = input + 1000")
    assert usage_report(sqlite_url, Query(period="daily", tz="Europe/Paris")).totals.input_tokens == 4015
    kolkata = usage_report(sqlite_url, Query(period="daily", tz="Asia/Kolkata"))
    assert kolkata.totals.input_tokens == 3015
    assert _days(kolkata) == {"2026-10-25": 1001, "2026-10-26": 2014}
    assert usage_report(sqlite_url, Query(period="session", tz="UTC")).totals.input_tokens == 15
