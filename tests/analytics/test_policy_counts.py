"""Decision counts on a real SQLite store equal a plain count of the rows, whether or not the range holds every record."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from loopmeter.analytics.filters import Filters
from loopmeter.analytics.policy import decision_counts

FMT = "%Y-%m-%d %H:%M:%S.%f"


def _raw(db, since: datetime | None, until: datetime | None, layer: str | None = None) -> dict[str, int]:
    sql, args = "SELECT decision, count(*) FROM audit WHERE 1=1", []
    if since is not None:
        sql, args = sql + " AND ts >= ?", [*args, since.strftime(FMT)]
    if until is not None:
        sql, args = sql + " AND ts < ?", [*args, until.strftime(FMT)]
    if layer is not None:
        sql, args = sql + " AND layer = ?", [*args, layer]
    return dict(sqlite3.connect(db).execute(sql + " GROUP BY decision", args).fetchall())


def _ends(db) -> tuple[datetime, datetime]:
    lo, hi = sqlite3.connect(db).execute("SELECT min(ts), max(ts) FROM audit").fetchone()
    return (datetime.strptime(lo, FMT).replace(tzinfo=UTC), datetime.strptime(hi, FMT).replace(tzinfo=UTC))


@pytest.mark.parametrize("case", ["all", "wide", "from-oldest", "until-newest", "inner", "before-any"])
def test_decision_counts_match_the_rows(seeded, loopmeter_home, case):
    db = loopmeter_home / "loopmeter.db"
    oldest, newest = _ends(db)
    since, until = {
        "all": (None, None),
        "wide": (oldest - timedelta(days=1), newest + timedelta(days=1)),
        "from-oldest": (oldest, newest + timedelta(seconds=1)),  # holds every record
        "until-newest": (oldest, newest),  # the newest is outside [since, until)
        "inner": (oldest + (newest - oldest) / 3, newest - (newest - oldest) / 3),
        "before-any": (oldest - timedelta(days=3), oldest - timedelta(days=2)),
    }[case]
    counts = decision_counts(seeded, Filters(since=since, until=until))
    assert counts == _raw(db, since, until)
    total = sum(counts.values())
    if case in ("all", "wide", "from-oldest"):
        assert total == 60
    elif case == "before-any":
        assert counts == {}
    else:
        assert 0 < total < 60
    assert decision_counts(seeded, Filters(since=since, until=until), layer="proxy") == _raw(db, since, until, "proxy")
