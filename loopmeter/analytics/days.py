"""Local days and ISO weeks: which calendar day, week or month a call belongs to. The one
definition behind `loopmeter usage`, `loopmeter report`, the dashboard and their charts.

A call belongs to the day a clock in the chosen IANA zone shows at its UTC instant,
daylight-saving changes included; a week is the ISO week (Monday to Sunday), labelled by
its Monday; a month is the calendar month. `periods` lists where each period begins, in
UTC, and every face labels an instant by searching those starts.

The store sums usage per UTC hour (`usage_hour`). An hour lies inside one local day unless
a day begins inside it, which happens every day in zones whose offset is not a whole hour
(Asia/Kolkata +05:30, Asia/Kathmandu +05:45, America/St_Johns -03:30). `plan` splits a
range into the whole hours the hourly sums give exactly and the pieces to sum from the
calls themselves: the hours a day begins inside, cut there, and the partial hours at the
ends of the range. Every piece lies inside one local day and is named by its start.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(day: date, period: Period) -> date:
    """The first day of the day, ISO week or month holding `day`."""
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}; one of {', '.join(PERIODS)}")


def _following(start: date, period: Period) -> date:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def day_begins(day: date, tz: tzinfo) -> datetime:
    """The UTC instant at which `day` begins in `tz`: its midnight, or, when a daylight-saving
    change skips midnight, the instant the clock jumps from the day before into it."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Periods:
    """Consecutive days, weeks or months of a zone: where each begins (UTC, ascending) and its
    label (YYYY-MM-DD; a week by its Monday; a month YYYY-MM)."""

    starts: tuple[datetime, ...]
    labels: tuple[str, ...]

    def label_of(self, t: datetime) -> str:
        """The label of the period holding the instant `t` (aware)."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            raise ValueError(f"{t.isoformat()} is before the first period ({self.starts[0].isoformat()})")
        return self.labels[i]

    def labels_of_ns(self, ns: Any) -> Any:
        """Vectorised `label_of` for a numpy array of UTC nanoseconds since the epoch."""
        import numpy as np

        edges = np.array([(s - _EPOCH) // timedelta(microseconds=1) * 1000 for s in self.starts], dtype=np.int64)
        i = np.searchsorted(edges, ns, side="right") - 1
        if len(i) and i.min() < 0:
            raise ValueError("an instant is before the first period")
        return np.asarray(self.labels, dtype=object)[i]


def periods(tz: tzinfo, lo: datetime, hi: datetime, period: Period = "day") -> Periods:
    """The days, weeks or months of `tz` holding any instant of [lo, hi]."""
    start = period_start(lo.astimezone(tz).date(), period)
    starts: list[datetime] = []
    labels: list[str] = []
    while True:
        begins = day_begins(start, tz)
        if begins > hi and starts:
            break
        starts.append(begins)
        labels.append(start.isoformat()[:7] if period == "month" else start.isoformat())
        start = _following(start, period)
    return Periods(tuple(starts), tuple(labels))


def labels(keys: Iterable[str], tz: tzinfo, period: Period) -> dict[str, str]:
    """{bucket key: label} for hour keys ('YYYY-MM-DD HH') and piece keys (`piece_key`), UTC."""
    starts = {k: parse_key(k) for k in set(keys)}
    if not starts:
        return {}
    found = periods(tz, min(starts.values()), max(starts.values()), period)
    return {k: found.label_of(t) for k, t in starts.items()}


# -- hours and pieces --------------------------------------------------------------


def hour_key(t: datetime) -> str:
    """The usage_hour key of the UTC hour holding `t`."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H")


def piece_key(t: datetime) -> str:
    """The key of a piece starting at `t`: its UTC start, to the second (or microsecond)."""
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def parse_key(key: str) -> datetime:
    """The UTC start of an hour key or a piece key."""
    return datetime.fromisoformat(key).replace(tzinfo=UTC)


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    floor = _floor_hour(t)
    return floor if floor == t else floor + HOUR


@dataclass(frozen=True)
class Plan:
    """How to sum usage over [lo, hi) so that every sum lies inside one local day: the UTC hours
    [first_hour, end_hour) from the hourly sums except the `split` ones, and `pieces` from the calls."""

    first_hour: datetime | None
    end_hour: datetime | None
    split: frozenset[str]  # hour keys a local day begins inside (not on the hour)
    pieces: tuple[tuple[datetime, datetime], ...]  # [start, end), UTC, each inside one local day

    def hour_keys(self) -> tuple[str, str] | None:
        """[first, end) of the whole hours as usage_hour keys; None when there is none."""
        if self.first_hour is None or self.end_hour is None:
            return None
        return hour_key(self.first_hour), hour_key(self.end_hour)

    def reads_hour(self, key: str) -> bool:
        """Whether the hourly sum of this hour key is part of the range."""
        keys = self.hour_keys()
        return keys is not None and keys[0] <= key < keys[1] and key not in self.split


def plan(tz: tzinfo, lo: datetime, hi: datetime) -> Plan:
    """Split [lo, hi) (aware datetimes) into whole UTC hours and pieces, each inside one local day of `tz`."""
    lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)
    if lo >= hi:
        return Plan(None, None, frozenset(), ())
    cuts = sorted({s for s in periods(tz, lo, hi, "day").starts if lo < s < hi})
    first, end = _ceil_hour(lo), _floor_hour(hi)
    if first >= end:  # no whole hour inside the range
        return Plan(None, None, frozenset(), tuple(_cut(lo, hi, cuts)))
    split = sorted({_floor_hour(c) for c in cuts if first <= c < end and c != _floor_hour(c)})
    pieces = [*_cut(lo, first, cuts), *(p for h in split for p in _cut(h, h + HOUR, cuts)), *_cut(end, hi, cuts)]
    return Plan(first, end, frozenset(hour_key(h) for h in split), tuple(pieces))


def _cut(a: datetime, b: datetime, cuts: list[datetime]) -> list[tuple[datetime, datetime]]:
    """[a, b) cut at every day start inside it; nothing when it is empty."""
    if a >= b:
        return []
    points = [a, *(c for c in cuts if a < c < b), b]
    return list(zip(points, points[1:], strict=False))
