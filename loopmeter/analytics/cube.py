"""Usage aggregated in SQL to one row per (UTC hour, agent, model, provider, source, project, user,
cost_source); every spend and token figure is a pandas roll-up of this small frame.

A million usage rows take seconds to group in SQLite, so the hourly aggregate is kept in a
cache file beside the store (`$LOOPMETER_HOME/cache/`), updated incrementally by usage id
and rebuilt when rows below the watermark change (count or cost fingerprint). The hours
at the edges of a date range that does not fall on the hour are read straight from the store,
so results are exact for any range.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import and_, case, func, literal_column, select

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import Store
from loopmeter.store.models import Usage

KEYS = ["hour", "agent", "model", "provider", "source", "project", "user", "cost_source"]
MEASURES = ["calls", "unpriced", "cost", "input", "cache_read", "cache_write", "output", "reasoning"]
CACHE_VERSION = "1"
_lock = threading.Lock()


def _hour_expr(store: Store) -> Any:
    if store.dialect == "sqlite":
        return func.substr(Usage.ts, 1, 13)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
    return func.to_char(Usage.ts.op("AT TIME ZONE")(literal_column("'UTC'")), "YYYY-MM-DD HH24")


def _aggregate(store: Store, where: list[Any]) -> list[tuple[Any, ...]]:
    hour = _hour_expr(store).label("hour")
    cols = [Usage.agent, Usage.model, Usage.provider, Usage.source, Usage.project, Usage.user, Usage.cost_source]
    stmt = (
        select(
            hour, *cols,
            func.count().label("calls"),
            func.sum(case((Usage.cost_usd.is_(None), 1), else_=0)).label("unpriced"),
            func.coalesce(func.sum(Usage.cost_usd), 0.0),
            func.coalesce(func.sum(Usage.input_tokens), 0),
            func.coalesce(func.sum(Usage.cache_read_tokens), 0),
            func.coalesce(func.sum(Usage.cache_write_tokens), 0),
            func.coalesce(func.sum(Usage.output_tokens), 0),
            func.coalesce(func.sum(Usage.reasoning_tokens), 0),
        )
        .where(and_(*where) if where else True)
        .group_by(hour, *cols)
    )
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA threads=4")  # lets SQLite sort for GROUP BY on more than one core
        return [tuple(r) for r in conn.execute(stmt)]


def _fingerprint(store: Store, watermark: int) -> tuple[int, float]:
    stmt = select(func.count(), func.coalesce(func.sum(Usage.cost_usd), 0.0)).where(Usage.id <= watermark)
    with store.engine.connect() as conn:
        n, total = conn.execute(stmt).one()
    return int(n), round(float(total), 6)


def _max_id(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(Usage.id), 0))).scalar_one())


def cache_path(store: Store, home: Path) -> Path:
    url = store.engine.url.render_as_string(hide_password=True)
    return home / "cache" / f"usage-cube-{hashlib.sha256(url.encode()).hexdigest()[:16]}.sqlite"


def _open_cache(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    cols = ", ".join(f'"{k}" TEXT NOT NULL' for k in KEYS)
    meas = ", ".join(f'"{m}" {"REAL" if m == "cost" else "INTEGER"} NOT NULL' for m in MEASURES)
    conn.execute(f"CREATE TABLE IF NOT EXISTS cube ({cols}, {meas}, PRIMARY KEY ({', '.join(KEYS)}))")
    return conn


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _merge(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    # NULL dimensions are stored as '' so the primary key can merge them
    clean = [tuple("" if v is None else v for v in r[:8]) + tuple(r[8:]) for r in rows]
    names = ", ".join(f'"{c}"' for c in KEYS + MEASURES)
    marks = ", ".join("?" for _ in KEYS + MEASURES)
    updates = ", ".join(f'"{m}" = "{m}" + excluded."{m}"' for m in MEASURES)
    conn.executemany(
        f"INSERT INTO cube ({names}) VALUES ({marks}) ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET {updates}",
        clean,
    )


def refresh_cache(store: Store, home: Path) -> Path:
    """Bring the cache up to date with the store; returns its path."""
    path = cache_path(store, home)
    with _lock:
        conn = _open_cache(path)
        try:
            meta = _meta(conn)
            top = _max_id(store)
            wm = int(meta.get("watermark", "0")) if meta.get("version") == CACHE_VERSION else -1
            if wm >= 0 and top >= wm:
                n, total = _fingerprint(store, wm)
                if (str(n), repr(total)) != (meta.get("count"), meta.get("cost")):
                    wm = -1
            else:
                wm = -1
            conn.execute("BEGIN IMMEDIATE")
            if wm < 0:
                conn.execute("DELETE FROM cube")
                wm = 0
            if top > wm:
                _merge(conn, _aggregate(store, [Usage.id > wm, Usage.id <= top]))
            n, total = _fingerprint(store, top) if top else (0, 0.0)
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("version", CACHE_VERSION), ("watermark", str(top)), ("count", str(n)), ("cost", repr(total))])
            conn.execute("COMMIT")
        finally:
            conn.close()
    return path


def _hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _hour_key(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H")


def load_cube(store: Store, filters: Filters, home: Path) -> pd.DataFrame:
    """The hourly usage aggregate for `filters`: columns KEYS + MEASURES, dimensions None where unknown."""
    path = refresh_cache(store, home)
    since, until = to_utc(filters.since), to_utc(filters.until)
    where, args = [], []
    full_lo = _hour_floor(since) + (timedelta(hours=1) if since and since != _hour_floor(since) else timedelta())\
        if since else None
    full_hi = _hour_floor(until) if until else None
    if full_lo is not None:
        where.append("hour >= ?")
        args.append(_hour_key(full_lo))
    if full_hi is not None:
        where.append("hour < ?")
        args.append(_hour_key(full_hi))
    for dim in ("agent", "model", "provider", "source", "project", "user"):
        value = _dim_filter(filters, dim)
        if value is not None:
            where.append(f'"{dim}" = ?')
            args.append(value)
    one_hour = full_lo is not None and full_hi is not None and full_lo >= full_hi
    if one_hour:  # the whole range sits inside one hour: all of it comes from the store
        where.append("0")
    sql = "SELECT * FROM cube" + (" WHERE " + " AND ".join(where) if where else "")
    conn = _open_cache(path)
    try:
        frame = pd.DataFrame(conn.execute(sql, args).fetchall(), columns=KEYS + MEASURES)
    finally:
        conn.close()
    edges = _edge_rows(store, filters, since, until, full_lo, full_hi)
    if edges:
        frame = pd.concat([frame, pd.DataFrame(edges, columns=KEYS + MEASURES)], ignore_index=True)
    for k in KEYS[1:]:
        frame[k] = frame[k].replace("", None)
    return frame


def _dim_filter(filters: Filters, dim: str) -> str | None:
    if dim == "project":
        return filters.project or filters.repo
    return getattr(filters, dim, None)


def _edge_rows(store: Store, filters: Filters, since: datetime | None, until: datetime | None,
               full_lo: datetime | None, full_hi: datetime | None) -> list[tuple[Any, ...]]:
    """Usage in the partial hours at either end of the range, aggregated straight from the store."""
    spans: list[tuple[datetime, datetime]] = []
    if since is not None and until is not None and full_lo is not None and full_hi is not None \
            and full_lo >= full_hi:
        spans.append((since, until))
    else:
        if since is not None and full_lo is not None and since < full_lo:
            spans.append((since, full_lo))
        if until is not None and full_hi is not None and full_hi < until:
            spans.append((full_hi, until))
    rows: list[tuple[Any, ...]] = []
    for lo, hi in spans:
        where = [Usage.ts >= lo, Usage.ts < hi]
        for dim in ("agent", "model", "provider", "source", "project", "user"):
            value = _dim_filter(filters, dim)
            if value is not None:
                where.append(getattr(Usage, dim) == value)
        rows.extend(_aggregate(store, where))
    return [tuple("" if v is None else v for v in r[:8]) + tuple(r[8:]) for r in rows]
