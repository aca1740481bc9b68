"""Local days and ISO weeks (loopmeter/analytics/days.py): exact for every IANA zone, and the usage cube
and `loopmeter usage` bucket calls by them, whatever the offset and its daylight-saving changes."""

from __future__ import annotations

import zoneinfo
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from loopmeter.analytics import days, spend
from loopmeter.analytics.cube import load_cube
from loopmeter.analytics.filters import Filters
from loopmeter.analytics.usage import Query, usage_report
from loopmeter.records import UsageRow
from loopmeter.vocab import CostSource

US = timedelta(microseconds=1)
# +05:30, +05:45, -03:30 with DST, +09:30/+10:30, +10:30/+11 (a 30-minute DST change), a whole-hour DST zone
ODD_ZONES = ["Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Australia/Adelaide", "Australia/Lord_Howe",
             "America/New_York"]


def test_every_zone_begins_each_day_at_the_first_instant_its_clock_shows_that_date():
    for name in sorted(zoneinfo.available_timezones()):
        tz = ZoneInfo(name)
        found = days.periods(tz, datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC), "day")
        for begins, label in zip(found.starts, found.labels, strict=True):
            d = date.fromisoformat(label)
            if begins.astimezone(tz).date() != d:  # a day the zone skipped: it begins where the next one does
                assert days.day_begins(d + timedelta(days=1), tz) == begins, (name, label)
                continue
            assert (begins - US).astimezone(tz).date() < d, (name, label)


@pytest.mark.parametrize("name", ODD_ZONES)
def test_a_plan_covers_the_range_once_and_every_part_lies_inside_one_local_day(name):
    tz = ZoneInfo(name)
    lo, hi = datetime(2026, 3, 20, 7, 13, 5, tzinfo=UTC), datetime(2026, 11, 9, 22, 41, tzinfo=UTC)
    plan = days.plan(tz, lo, hi)
    assert plan.first_hour is not None and plan.end_hour is not None
    hours = []
    t = plan.first_hour
    while t < plan.end_hour:
        if plan.reads_hour(days.hour_key(t)):
            hours.append((t, t + days.HOUR))
        t += days.HOUR
    parts = sorted(hours + list(plan.pieces))
    assert parts[0][0] == lo and parts[-1][1] == hi
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))  # no gap, no overlap
    for a, b in parts:
        assert a.astimezone(tz).date() == (b - US).astimezone(tz).date(), (name, a, b)
    whole_hours = name == "America/New_York"
    assert (not plan.split) == whole_hours  # only zones off the hour read hours from the calls


def test_weeks_begin_on_monday_and_months_on_the_first():
    tz = ZoneInfo("Asia/Kathmandu")
    weeks = days.periods(tz, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC), "week")
    assert weeks.labels[:2] == ("2026-02-23", "2026-03-02")
    assert weeks.starts[1] == datetime(2026, 3, 1, 18, 15, tzinfo=UTC)  # Monday 00:00 at +05:45
    months = days.periods(tz, datetime(2026, 1, 31, 18, 15, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC), "month")
    assert months.labels == ("2026-02", "2026-03") and months.label_of(datetime(2026, 1, 31, 18, 15, tzinfo=UTC)) \
        == "2026-02"


@pytest.mark.parametrize("name", ODD_ZONES)
def test_cube_and_usage_bucket_each_call_on_its_local_day(store, sqlite_url, loopmeter_home, name):
    # a call every 23 minutes across both of the zone's daylight-saving changes of 2026
    start = datetime(2026, 3, 1, tzinfo=UTC) if "Australia" not in name else datetime(2026, 3, 30, tzinfo=UTC)
    calls = [start + i * timedelta(minutes=23) for i in range(1200)]
    if "Australia" in name:
        calls += [datetime(2026, 10, 1, tzinfo=UTC) + i * timedelta(minutes=23) for i in range(600)]
    else:
        calls += [datetime(2026, 10, 28, tzinfo=UTC) + i * timedelta(minutes=23) for i in range(600)]
    store.add_usage([UsageRow(key=f"d{i}", source="claude-code-log", ts=t, model="m", agent="a", input_tokens=1,
                              cost_usd=0.01, cost_source=CostSource.CALCULATED) for i, t in enumerate(calls)])
    tz = ZoneInfo(name)
    want = Counter(t.astimezone(tz).date().isoformat() for t in calls)
    want_weeks = Counter((t.astimezone(tz).date() - timedelta(days=t.astimezone(tz).weekday())).isoformat()
                         for t in calls)

    cube = load_cube(store, Filters(timezone=name), loopmeter_home)
    assert dict(zip(*[spend.over_time(cube, "day", tz=tz)[c] for c in ("period", "calls")], strict=True)) == want
    assert dict(zip(*[spend.over_time(cube, "week", tz=tz)[c] for c in ("period", "calls")], strict=True)) == \
        want_weeks
    daily = usage_report(sqlite_url, Query(period="daily", tz=name))
    assert {r.label: r.totals.calls for r in daily.rows} == want

    # a range that starts and ends off the hour and inside local days
    since, until = start + timedelta(days=3, hours=3, minutes=17), start + timedelta(days=10, hours=11, minutes=58)
    inside = Counter(t.astimezone(tz).date().isoformat() for t in calls if since <= t < until)
    assert len(inside) >= 7
    cube = load_cube(store, Filters(since=since, until=until, timezone=name), loopmeter_home)
    assert dict(zip(*[spend.over_time(cube, "day", tz=tz)[c] for c in ("period", "calls")], strict=True)) == inside
