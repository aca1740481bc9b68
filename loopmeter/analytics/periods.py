"""Usage per day, week, month, session or 5-hour block: `loopmeter usage`'s own aggregation
(loopmeter/analytics/usage.py), called with the shared Filters so the dashboard shows the same
periods as `loopmeter usage`.

usage.py filters by local date range, source group and project; agent, model, provider and user
filters do not apply to these period rows (the Usage tab says so).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from loopmeter.analytics.filters import Filters

if TYPE_CHECKING:  # the dashboard imports PERIODS before it opens the store
    from loopmeter.store import Store

PERIODS = {"per day": "daily", "per week": "weekly", "per month": "monthly", "per session": "session",
           "5h blocks": "blocks"}
UNSUPPORTED = ("agent", "model", "provider", "user")


def source_group(source: str | None) -> list[str]:
    """The `loopmeter usage --source` group holding a raw usage.source value."""
    if source is None:
        return []
    from loopmeter.analytics.usage import SOURCE_GROUPS

    return [name for name, members in SOURCE_GROUPS.items() if source in members]


def usage_periods(store: Store, filters: Filters, period: str, now: Any = None) -> dict[str, Any]:
    """{"rows": [{label, calls, unpriced_calls, cost_usd, input_tokens, ...}], "ignored": [filter names]}."""
    from loopmeter.analytics.usage import Query, usage_report

    tz = filters.tz
    since = filters.since.astimezone(tz).date() if filters.since else None
    until = (filters.until - timedelta(microseconds=1)).astimezone(tz).date() if filters.until else None
    q = Query(period=period, since=since, until=until, tz=filters.timezone or "UTC",
              sources=source_group(filters.source), project=filters.project or filters.repo, now=now)
    report = usage_report(store, q)
    rows = [{"label": r.label, **r.totals.as_json()} for r in report.rows]
    return {"rows": rows, "ignored": [f for f in UNSUPPORTED if getattr(filters, f)]}
