"""Usage per period (day, ISO week, month, session, 5-hour block), as SQL aggregates.

    from loopmeter.analytics.usage import usage_report, Query
    report = usage_report(store_or_url, Query(period="daily", tz="Europe/Paris", sources=["claude-code"]))
    report.as_json()   # the documented `loopmeter usage --json` shape (docs/usage.md)

Days, weeks and months are loopmeter/analytics/days.py's, the same as `loopmeter report`'s
and the dashboard's: SQL sums the store's hourly rollup (usage_hour) for the hours that lie
inside one local day and the calls themselves for the rest, by model and source, and Python
labels those sums with their period. Sessions and 5-hour blocks group the calls. Only the
stdlib `sqlite3` is needed for a SQLite URL, so the report loads fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loopmeter.analytics import days
from loopmeter.analytics.days import day_begins
from loopmeter.analytics.sums import (
    HOUR_SUMS,
    ROW_SUMS,
    Db,
    cache_hit_ratio,
    measures,
    piece_sums,
    rollup_is_current,
    stored_range,
    utc_ts,
)
from loopmeter.errors import LoopmeterError
from loopmeter.store import rollup

if TYPE_CHECKING:
    from loopmeter.store import Store
    from loopmeter.store.pg_read import PgReader

PERIODS = ("daily", "weekly", "monthly", "session", "blocks")
PERIOD_OF: dict[str, days.Period] = {"daily": "day", "weekly": "week", "monthly": "month"}
PERIOD_KEY = {"daily": "date", "weekly": "week", "monthly": "month", "session": "session", "blocks": "start"}
# `--source` names -> usage.source values
SOURCE_GROUPS = {
    "claude-code": ("claude-code-log",),
    "codex": ("codex-log",),
    "gemini": ("gemini-log",),
    "otlp": ("otlp",),
    "loop": ("loop", "claude-json", "codex-json", "gemini-json", "cursor-json", "aider-text"),
}
BLOCK = timedelta(hours=5)
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens", "reasoning_tokens")


@dataclass
class Totals:
    """Summed usage. `cost_usd` is None when no call in it had a price."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    calls: int = 0
    unpriced_calls: int = 0

    def add(self, other: Totals) -> None:
        for f in TOKEN_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        if other.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + other.cost_usd
        self.calls += other.calls
        self.unpriced_calls += other.unpriced_calls

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def cache_hit_ratio(self) -> float | None:
        return cache_hit_ratio(self.input_tokens, self.cache_read_tokens, self.cache_write_tokens)

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: getattr(self, f) for f in TOKEN_FIELDS}
        d["cost_usd"] = round(self.cost_usd, 6) if self.cost_usd is not None else None
        d["unpriced_calls"] = self.unpriced_calls
        d["calls"] = self.calls
        ratio = self.cache_hit_ratio
        d["cache_hit_ratio"] = round(ratio, 4) if ratio is not None else None
        return d


@dataclass
class Breakdown:
    model: str
    source: str
    totals: Totals = field(default_factory=Totals)

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, **self.totals.as_json()}


@dataclass
class PeriodRow:
    """One period: a day, week, month, session or block."""

    label: str  # the period key's value: "2026-11-09", "2026-W45" Monday date, "2026-11", a session id, a block start
    totals: Totals = field(default_factory=Totals)
    breakdown: dict[tuple[str, str], Breakdown] = field(default_factory=dict)
    project: str | None = None  # sessions
    first: datetime | None = None  # sessions and blocks (UTC)
    last: datetime | None = None
    end: datetime | None = None  # blocks
    active: bool = False  # blocks: the window containing now
    burn: dict[str, Any] | None = None  # blocks: the active one's rate and projection

    @property
    def models(self) -> list[str]:
        return sorted({b.model for b in self.breakdown.values()})

    def add(self, model: str, source: str, t: Totals) -> None:
        self.totals.add(t)
        b = self.breakdown.setdefault((model, source), Breakdown(model, source))
        b.totals.add(t)


@dataclass
class Query:
    period: str = "daily"
    since: date | None = None  # local dates, inclusive
    until: date | None = None
    tz: str | None = None  # IANA name; None = the machine's zone
    sources: Sequence[str] = ()  # --source names (claude-code, codex, ...); empty = all
    project: str | None = None  # substring of the project path
    now: datetime | None = None  # the clock, for blocks (tests pass a fixed one)


@dataclass
class UsageReport:
    period: str
    timezone: str
    rows: list[PeriodRow]
    totals: Totals

    def as_json(self) -> dict[str, Any]:
        key = PERIOD_KEY[self.period]
        out = []
        for r in self.rows:
            label = _iso(datetime.fromisoformat(r.label), self.timezone) if self.period == "blocks" else r.label
            d: dict[str, Any] = {key: label, **r.totals.as_json(), "models": r.models,
                                 "breakdown": [b.as_json() for _, b in sorted(r.breakdown.items())]}
            if self.period == "session":
                d["project"] = r.project
            if self.period in ("session", "blocks"):
                d["first"] = _iso(r.first, self.timezone)
                d["last"] = _iso(r.last, self.timezone)
            if self.period == "blocks":
                d["end"] = _iso(r.end, self.timezone)
                d["active"] = r.active
                d["burn_rate"] = r.burn
            out.append(d)
        return {self.period: out, "totals": self.totals.as_json(), "timezone": self.timezone}


def _iso(ts: datetime | None, tz: str) -> str | None:
    return ts.astimezone(resolve_tz(tz)).isoformat() if ts else None


# -- time zones -----------------------------------------------------------------


def local_tz_name() -> str:
    """The machine's IANA zone: $TZ, else /etc/localtime's target, else UTC."""
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        return env
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


def resolve_tz(name: str | None) -> tzinfo:
    name = name or local_tz_name()
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise LoopmeterError(f"unknown time zone {name!r}", hint="use an IANA name such as Europe/Paris or UTC") from exc


def _totals(values: Sequence[Any]) -> Totals:
    """Totals from the rollup's measures in order; the cost is None when no call had a price."""
    calls, unpriced, cost, inp, cache_read, cache_write, out, reasoning = measures(values)
    return Totals(inp, out, cache_write, cache_read, reasoning, cost if calls > unpriced else None, calls, unpriced)


def _filters(q: Query) -> tuple[str, dict[str, Any]]:
    """SQL conditions for the query's sources and project, on usage rows and on usage_hour alike."""
    clauses, params = ["1=1"], {}
    if q.sources:
        tags: list[str] = []
        for name in q.sources:
            if name not in SOURCE_GROUPS:
                raise LoopmeterError(f"unknown source {name!r}", hint=f"one of {', '.join(SOURCE_GROUPS)}")
            tags.extend(SOURCE_GROUPS[name])
        names = []
        for i, tag in enumerate(tags):
            params[f"s{i}"] = tag
            names.append(f":s{i}")
        clauses.append(f"source IN ({', '.join(names)})")
    if q.project:
        params["project"] = f"%{q.project}%"
        clauses.append("project LIKE :project")
    return " AND ".join(clauses), params


def _bounds(q: Query, tz: tzinfo) -> tuple[datetime | None, datetime | None]:
    """The query's local dates as a UTC range [since's first instant, the instant after until)."""
    lo = day_begins(q.since, tz) if q.since else None
    hi = day_begins(q.until + timedelta(days=1), tz) if q.until else None
    return lo, hi


def _time_where(db: Db, q: Query, tz: tzinfo) -> tuple[str, dict[str, Any]]:
    where, params = _filters(q)
    lo, hi = _bounds(q, tz)
    if lo is not None:
        params["lo"] = db.ts_param(lo)
        where += " AND ts >= :lo"
    if hi is not None:
        params["hi"] = db.ts_param(hi)
        where += " AND ts < :hi"
    return where, params


def usage_report(target: Store | PgReader | str | Path, q: Query) -> UsageReport:
    """Usage per period for the query; `target` is a Store, a PostgreSQL store's PgReader, a
    database URL or a SQLite file path."""
    if q.period not in PERIODS:
        raise LoopmeterError(f"unknown period {q.period!r}", hint=f"one of {', '.join(PERIODS)}")
    tz_name = q.tz or local_tz_name()
    tz = resolve_tz(tz_name)
    db = Db(target)
    try:
        if q.period == "session":
            rows = _sessions(db, *_time_where(db, q, tz))
        elif q.period == "blocks":
            rows = _blocks(db, *_time_where(db, q, tz), q.now or datetime.now(UTC))
        else:
            rows = _by_day(db, q, tz)
    finally:
        db.close()
    totals = Totals()
    for r in rows:
        totals.add(r.totals)
    return UsageReport(q.period, tz_name, rows, totals)


_MODEL = "COALESCE(NULLIF(model, ''), 'unknown')"  # usage rows hold NULL, usage_hour '' for no model


def _by_day(db: Db, q: Query, tz: tzinfo) -> list[PeriodRow]:
    """Days, weeks or months (loopmeter/analytics/days.py): the hourly sums of the hours that lie
    inside one local day, and the calls of the hours a local day begins inside and of partial hours."""
    rollup_current = rollup_is_current(db)
    lo, hi = _bounds(q, tz)
    if lo is None or hi is None:
        stored = stored_range(db, rollup_current)
        if stored is None:
            return []
        lo, hi = lo or stored[0], hi or stored[1]
    plan = days.plan(tz, lo, hi)
    where, params = _filters(q)
    rows = [r for r in _hour_rows(db, plan, where, params, rollup_current) if r[0] not in plan.split]
    rows += piece_sums(db, plan.pieces, [_MODEL, "source"], where, params)
    names = days.labels({r[0] for r in rows}, tz, PERIOD_OF[q.period])
    sums: dict[tuple[str, str, str], list[Any]] = {}
    for key, model, source, *measured in rows:
        acc = sums.setdefault((names[key], model, source), [0] * len(measured))
        for i, v in enumerate(measured):
            acc[i] += v
    out: dict[str, PeriodRow] = {}
    for (label, model, source), measured in sums.items():
        out.setdefault(label, PeriodRow(label)).add(model, source, _totals(measured))
    return [out[k] for k in sorted(out)]


def _hour_rows(db: Db, plan: days.Plan, where: str, params: dict[str, Any],
               rollup_current: bool) -> list[tuple[Any, ...]]:
    """(hour key, model, source, *measures) for the plan's whole hours, from usage_hour when it is
    current, else from the rows."""
    keys = plan.hour_keys()
    if keys is None or plan.first_hour is None or plan.end_hour is None:
        return []
    if rollup_current:
        bound = {**params, "h0": keys[0], "h1": keys[1]}
        sql = (f"SELECT hour, {_MODEL}, source, {HOUR_SUMS} FROM usage_hour "
               f"WHERE hour >= :h0 AND hour < :h1 AND {where} GROUP BY 1, 2, 3")
    else:
        bound = {**params, "h0": db.ts_param(plan.first_hour), "h1": db.ts_param(plan.end_hour)}
        sql = (f"SELECT {rollup.HOUR_OF_TS[db.dialect]}, {_MODEL}, source, {ROW_SUMS} FROM usage "
               f"WHERE ts >= :h0 AND ts < :h1 AND {where} GROUP BY 1, 2, 3")
    return db.rows(sql, bound)

def _sessions(db: Db, where: str, params: dict[str, Any]) -> list[PeriodRow]:
    sql = (f"SELECT COALESCE(session_id, ''), {_MODEL}, source, MAX(project), MIN(ts), MAX(ts), "
           f"{ROW_SUMS} FROM usage WHERE {where} GROUP BY 1, 2, 3")
    out: dict[str, PeriodRow] = {}
    for sid, model, source, project, first, last, *sums in db.rows(sql, params):
        row = out.setdefault(sid, PeriodRow(sid))
        row.add(model, source, _totals(sums))
        row.project = row.project or project
        f, la = utc_ts(first), utc_ts(last)
        row.first = min(row.first, f) if row.first else f
        row.last = max(row.last, la) if row.last else la
    return sorted(out.values(), key=lambda r: (r.last or datetime.min.replace(tzinfo=UTC), r.label))


def _blocks(db: Db, where: str, params: dict[str, Any], now: datetime) -> list[PeriodRow]:
    sql = (f"SELECT {rollup.HOUR_OF_TS[db.dialect]} AS h, {_MODEL}, source, MIN(ts), MAX(ts), {ROW_SUMS} "
           f"FROM usage WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1")
    blocks: list[PeriodRow] = []
    for _h, model, source, first, last, *sums in db.rows(sql, params):
        f, la = utc_ts(first), utc_ts(last)
        cur = blocks[-1] if blocks else None
        # A block opens at the hour of its first call and lasts 5 hours; a call after
        # its end, or after 5 idle hours, opens the next one.
        if cur is None or cur.end is None or cur.last is None or f >= cur.end or f - cur.last > BLOCK:
            start = f.replace(minute=0, second=0, microsecond=0)
            cur = PeriodRow(start.isoformat(), first=f, last=la, end=start + BLOCK)
            blocks.append(cur)
        cur.add(model, source, _totals(sums))
        cur.first = min(cur.first or f, f)
        cur.last = max(cur.last or la, la)
    now = now.astimezone(UTC)
    for b in blocks:
        assert b.end is not None and b.last is not None and b.first is not None
        if b.end > now >= b.first and now - b.last < BLOCK:
            b.active = True
            b.burn = _burn(b, now)
    return blocks


def _burn(b: PeriodRow, now: datetime) -> dict[str, Any]:
    """Tokens per minute and dollars per hour since the block's first call, projected to its end."""
    assert b.first is not None and b.end is not None
    minutes = max((now - b.first).total_seconds() / 60, 1.0)
    remaining = max((b.end - now).total_seconds() / 60, 0.0)
    tpm = b.totals.total_tokens / minutes
    cost = b.totals.cost_usd
    return {
        "tokens_per_minute": round(tpm, 1),
        "cost_per_hour": round(cost / minutes * 60, 4) if cost is not None else None,
        "remaining_minutes": round(remaining, 1),
        "projected_tokens": int(b.totals.total_tokens + tpm * remaining),
        "projected_cost_usd": round(cost + cost / minutes * remaining, 4) if cost is not None else None,
    }


def source_names() -> Iterable[str]:
    return SOURCE_GROUPS.keys()
