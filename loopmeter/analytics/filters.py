"""The one filter every analytics function, dashboard tab and report takes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

RANGES = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30),
          "90d": timedelta(days=90), "all": None}
RANGE_LABELS = {"24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days", "90d": "last 90 days",
                "all": "all time"}
DIMENSIONS = ("agent", "model", "provider", "source", "project", "user")


@dataclass(frozen=True)
class Filters:
    """A date range [since, until) in UTC plus equality filters; None means 'all'.

    `source` applies to usage rows only (attempts are always loop work); `repo`
    applies to runs and attempts (through run.repo) and to usage rows' `project`.
    """

    since: datetime | None = None
    until: datetime | None = None
    agent: str | None = None
    model: str | None = None
    project: str | None = None
    user: str | None = None
    source: str | None = None
    repo: str | None = None
    provider: str | None = None
    timezone: str = "UTC"

    @property
    def tz(self) -> tzinfo:
        return UTC if self.timezone in ("UTC", "") else ZoneInfo(self.timezone)

    def replace(self, **changes: Any) -> Filters:
        return dataclasses.replace(self, **changes)

    def usage_dims(self) -> dict[str, str]:
        """The equality conditions on usage's dimensions (DIMENSIONS): `repo` selects usage by its project."""
        values = {dim: getattr(self, dim) for dim in DIMENSIONS}
        values["project"] = self.project or self.repo
        return {dim: value for dim, value in values.items() if value is not None}

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("since", "until"):
            d[k] = d[k].isoformat() if d[k] else None
        return d

    def describe(self) -> str:
        """One line for headers: the range and whatever else is set."""
        parts = [_range_text(self.since, self.until)]
        parts += [f"{k}={v}" for k, v in self.as_dict().items()
                  if k not in ("since", "until", "timezone") and v]
        return "  ".join(parts)


def _range_text(since: datetime | None, until: datetime | None) -> str:
    fmt = "%Y-%m-%d %H:%M"
    if since is None and until is None:
        return "all time"
    a = since.strftime(fmt) if since else "start"
    b = until.strftime(fmt) if until else "now"
    return f"{a} .. {b} UTC"


def range_filters(name: str, now: datetime, base: Filters | None = None) -> Filters:
    """Filters for a named range ending at `now` (the clock is an argument so tests can fix it)."""
    if name not in RANGES:
        raise ValueError(f"unknown range {name!r}; known: {', '.join(RANGES)}")
    span = RANGES[name]
    base = base or Filters()
    if span is None:
        return base.replace(since=None, until=None)
    return base.replace(since=now - span, until=now)


def to_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
