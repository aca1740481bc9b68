"""Usage per period (day, ISO week, month, session, 5-hour block), as SQL aggregates.

    from loopmeter.analytics.usage import usage_report, Query
    report = usage_report(store_or_url, Query(period="daily", tz="Europe/Paris", sources=["claude-code"]))
    report.as_json()   # the documented `loopmeter usage --json` shape (docs/usage.md)

SQL groups the usage rows by local day (or UTC hour for blocks, or session), model
and source; Python only merges those few groups into weeks, months and blocks. Days
follow the IANA time zone, daylight-saving changes included: on SQLite the local
date is a CASE over the zone's offset segments, on PostgreSQL `AT TIME ZONE`.
Only the stdlib `sqlite3` is needed for a SQLite URL, so the report loads fast.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loopmeter.errors import LoopmeterError

if TYPE_CHECKING:
    from loopmeter.store import Store

PERIODS = ("daily", "weekly", "monthly", "session", "blocks")
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
        """cache_read / (input + cache_read + cache_write); None with no input at all."""
        prompt = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / prompt if prompt else None

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


def offset_segments(tz: tzinfo, lo: datetime, hi: datetime) -> list[tuple[datetime | None, int]]:
    """[(segment end in UTC or None for the last, UTC offset in seconds)] covering [lo, hi]."""

    def off(t: datetime) -> int:
        delta = t.astimezone(tz).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    segments: list[tuple[datetime | None, int]] = []
    cur, cur_off = lo, off(lo)
    step = timedelta(days=1)
    while cur < hi:
        nxt = min(cur + step, hi)
        if off(nxt) != cur_off:
            a, b = cur, nxt  # the change lies in (a, b]: narrow it to the second
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) / 2
                if off(mid) == cur_off:
                    a = mid
                else:
                    b = mid
            b = b.replace(microsecond=0) if off(b.replace(microsecond=0)) != cur_off else b
            segments.append((b, cur_off))
            cur_off = off(b)
        cur = nxt
    segments.append((None, cur_off))
    return segments


# -- running SQL on a Store or a SQLite file -------------------------------------


class _Db:
    """Runs named-parameter SQL on a Store (SQLAlchemy) or a SQLite file (stdlib driver)."""

    def __init__(self, target: Store | str | Path):
        self._store: Store | None = None
        self._conn: sqlite3.Connection | None = None
        if isinstance(target, str | Path):
            url = str(target)
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
            if path is None and isinstance(target, str) and "://" in url:
                from loopmeter.store import open_store

                self._store = open_store(url)
            else:
                self._conn = sqlite3.connect(f"file:{path or url}?mode=ro", uri=True, timeout=10)
        else:
            self._store = target
        self.dialect = self._store.dialect if self._store is not None else "sqlite"

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        if self._conn is not None:
            return self._conn.execute(sql, params).fetchall()
        assert self._store is not None
        from sqlalchemy import text

        with self._store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def ts_param(self, ts: datetime) -> Any:
        """A bound for `ts`: SQLite stores naive UTC text, SQLAlchemy takes the aware datetime."""
        utc = ts.astimezone(UTC)
        if self._conn is not None or self.dialect == "sqlite":
            return utc.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        return utc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


_SUMS = (
    "COUNT(*), SUM(COALESCE(input_tokens, 0)), SUM(COALESCE(output_tokens, 0)), "
    "SUM(COALESCE(cache_write_tokens, 0)), SUM(COALESCE(cache_read_tokens, 0)), "
    "SUM(COALESCE(reasoning_tokens, 0)), SUM(cost_usd), "
    "SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END)"
)


def _totals(values: Sequence[Any]) -> Totals:
    calls, inp, out, cw, cr, rs, cost, unpriced = values
    return Totals(int(inp or 0), int(out or 0), int(cw or 0), int(cr or 0), int(rs or 0),
                  float(cost) if cost is not None else None, int(calls or 0), int(unpriced or 0))


def _hour_key(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H")


def _where(db: _Db, q: Query, tz: tzinfo, *, hourly: bool = False) -> tuple[str, dict[str, Any]]:
    """SQL conditions for the query on usage rows, or with `hourly` on the usage_hour rollup."""
    clauses, params = ["1=1"], {}
    col, bound = ("hour", _hour_key) if hourly else ("ts", db.ts_param)
    if q.since:
        params["lo"] = bound(datetime.combine(q.since, datetime.min.time(), tz))
        clauses.append(f"{col} >= :lo")
    if q.until:
        params["hi"] = bound(datetime.combine(q.until + timedelta(days=1), datetime.min.time(), tz))
        clauses.append(f"{col} < :hi")
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


def _local_date_sql(db: _Db, tz: tzinfo, tz_name: str, where: str, params: dict[str, Any]) -> str:
    if db.dialect == "postgresql":
        params["tzname"] = tz_name if tz is not UTC else "UTC"
        return "to_char(ts AT TIME ZONE :tzname, 'YYYY-MM-DD')"  # ts is timestamptz
    lo_hi = db.rows(f"SELECT MIN(ts), MAX(ts) FROM usage WHERE {where}", params)[0]
    if lo_hi[0] is None:
        return "substr(ts, 1, 10)"
    segments = offset_segments(tz, _ts(lo_hi[0]), _ts(lo_hi[1]))
    if len(segments) == 1:
        return f"date(ts, '{segments[0][1]:+d} seconds')"
    whens = []
    for i, (end, off) in enumerate(segments[:-1]):
        assert end is not None
        params[f"seg{i}"] = db.ts_param(end)
        whens.append(f"WHEN ts < :seg{i} THEN date(ts, '{off:+d} seconds')")
    return f"CASE {' '.join(whens)} ELSE date(ts, '{segments[-1][1]:+d} seconds') END"


def _period_label(day: str, period: str) -> str:
    if period == "weekly":
        d = date.fromisoformat(day)
        return (d - timedelta(days=d.weekday())).isoformat()
    if period == "monthly":
        return day[:7]
    return day


def usage_report(target: Store | str | Path, q: Query) -> UsageReport:
    """Usage per period for the query; `target` is a Store, a database URL or a SQLite file path."""
    if q.period not in PERIODS:
        raise LoopmeterError(f"unknown period {q.period!r}", hint=f"one of {', '.join(PERIODS)}")
    tz_name = q.tz or local_tz_name()
    tz = resolve_tz(tz_name)
    db = _Db(target)
    try:
        where, params = _where(db, q, tz)
        if q.period == "session":
            rows = _sessions(db, where, params)
        elif q.period == "blocks":
            rows = _blocks(db, where, params, q.now or datetime.now(UTC))
        else:
            rows = _by_day(db, q.period, tz, tz_name, where, params, q)
    finally:
        db.close()
    totals = Totals()
    for r in rows:
        totals.add(r.totals)
    return UsageReport(q.period, tz_name, rows, totals)


def _by_day(db: _Db, period: str, tz: tzinfo, tz_name: str, where: str, params: dict[str, Any],
            q: Query | None = None) -> list[PeriodRow]:
    if q is not None and db.dialect == "sqlite":
        fast = _by_day_from_rollup(db, period, tz, q)
        if fast is not None:
            return fast
    day = _local_date_sql(db, tz, tz_name, where, params)
    sql = (f"SELECT {day} AS d, COALESCE(NULLIF(model, ''), 'unknown'), source, {_SUMS} FROM usage WHERE {where} "
           f"GROUP BY 1, 2, 3 ORDER BY 1")
    return _day_rows(db.rows(sql, params), period)


def _day_rows(rows: list[tuple[Any, ...]], period: str) -> list[PeriodRow]:
    """(local day, model, source, *sums) rows merged into days, weeks or months."""
    out: dict[str, PeriodRow] = {}
    for d, model, source, *sums in rows:
        label = _period_label(str(d), period)
        out.setdefault(label, PeriodRow(label)).add(model, source, _totals(sums))
    return [out[k] for k in sorted(out)]


def _by_day_from_rollup(db: _Db, period: str, tz: tzinfo, q: Query) -> list[PeriodRow] | None:
    """Days, weeks or months summed from the store's hourly rollup (usage_hour) instead of every
    row: exact whenever the zone's offsets are whole hours, so each UTC hour falls in one local
    day. None when that does not hold, or the rollup is missing or behind (then rows are read)."""
    try:
        n, calls, lo, hi = db.rows(
            "SELECT (SELECT count(*) FROM usage), (SELECT coalesce(sum(calls), 0) FROM usage_hour), "
            "(SELECT min(hour) FROM usage_hour), (SELECT max(hour) FROM usage_hour)", {})[0]
    except sqlite3.Error:
        return None  # a store from before schema 3, opened read-only
    if n != calls:
        return None
    if lo is None:
        return []
    first = datetime.strptime(lo, "%Y-%m-%d %H").replace(tzinfo=UTC)
    last = datetime.strptime(hi, "%Y-%m-%d %H").replace(tzinfo=UTC) + timedelta(hours=1)
    segments = offset_segments(tz, first, last)
    if any(off % 3600 for _, off in segments) or any(end is not None and end.minute + end.second for end, _ in segments):
        return None
    where, params = _where(db, q, tz, hourly=True)
    whens = []
    for i, (end, off) in enumerate(segments[:-1]):
        assert end is not None
        params[f"seg{i}"] = _hour_key(end)
        whens.append(f"WHEN hour < :seg{i} THEN date(hour || ':00:00', '{off:+d} seconds')")
    final = f"date(hour || ':00:00', '{segments[-1][1]:+d} seconds')"
    day = f"CASE {' '.join(whens)} ELSE {final} END" if whens else final
    sql = (f"SELECT {day} AS d, CASE WHEN model = '' THEN 'unknown' ELSE model END, source, sum(calls), "
           "sum(input), sum(output), sum(cache_write), sum(cache_read), sum(reasoning), "
           "CASE WHEN sum(calls) > sum(unpriced) THEN sum(cost) END, sum(unpriced) "
           f"FROM usage_hour WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1")
    return _day_rows(db.rows(sql, params), period)


def _sessions(db: _Db, where: str, params: dict[str, Any]) -> list[PeriodRow]:
    sql = (f"SELECT COALESCE(session_id, ''), COALESCE(NULLIF(model, ''), 'unknown'), source, MAX(project), MIN(ts), MAX(ts), "
           f"{_SUMS} FROM usage WHERE {where} GROUP BY 1, 2, 3")
    out: dict[str, PeriodRow] = {}
    for sid, model, source, project, first, last, *sums in db.rows(sql, params):
        row = out.setdefault(sid, PeriodRow(sid))
        row.add(model, source, _totals(sums))
        row.project = row.project or project
        f, la = _ts(first), _ts(last)
        row.first = min(row.first, f) if row.first else f
        row.last = max(row.last, la) if row.last else la
    return sorted(out.values(), key=lambda r: (r.last or datetime.min.replace(tzinfo=UTC), r.label))


def _blocks(db: _Db, where: str, params: dict[str, Any], now: datetime) -> list[PeriodRow]:
    hour = "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')" if db.dialect == "postgresql" else "substr(ts, 1, 13)"
    sql = (f"SELECT {hour} AS h, COALESCE(NULLIF(model, ''), 'unknown'), source, MIN(ts), MAX(ts), {_SUMS} "
           f"FROM usage WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1")
    blocks: list[PeriodRow] = []
    for _h, model, source, first, last, *sums in db.rows(sql, params):
        f, la = _ts(first), _ts(last)
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
