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
import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import case, func, literal_column, select

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import Store
from loopmeter.store.models import Usage

_U: Any = Usage.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL

KEYS = ["hour", "agent", "model", "provider", "source", "project", "user", "cost_source"]
MEASURES = ["calls", "unpriced", "cost", "input", "cache_read", "cache_write", "output", "reasoning"]
CACHE_VERSION = "1"
_lock = threading.Lock()
_memo: dict[Path, tuple[str, pd.DataFrame]] = {}


def _hour_expr(store: Store) -> Any:
    if store.dialect == "sqlite":
        return func.substr(_U.ts, 1, 13)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
    return func.to_char(_U.ts.op("AT TIME ZONE")(literal_column("'UTC'")), "YYYY-MM-DD HH24")


def _aggregate(store: Store, where: list[Any]) -> list[tuple[Any, ...]]:
    hour = _hour_expr(store).label("hour")
    cols = [_U.agent, _U.model, _U.provider, _U.source, _U.project, _U.user, _U.cost_source]
    stmt = (
        select(
            hour, *cols,
            func.count().label("calls"),
            func.sum(case((_U.cost_usd.is_(None), 1), else_=0)).label("unpriced"),
            func.coalesce(func.sum(_U.cost_usd), 0.0),
            func.coalesce(func.sum(_U.input_tokens), 0),
            func.coalesce(func.sum(_U.cache_read_tokens), 0),
            func.coalesce(func.sum(_U.cache_write_tokens), 0),
            func.coalesce(func.sum(_U.output_tokens), 0),
            func.coalesce(func.sum(_U.reasoning_tokens), 0),
        )
        .where(*where)
        .group_by(hour, *cols)
    )
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA threads=4")  # lets SQLite sort for GROUP BY on more than one core
        # PostgreSQL sums BIGINT as NUMERIC (Decimal): plain ints and floats for the cache
        return [(*r[:8], int(r[8]), int(r[9] or 0), float(r[10]), *(int(v) for v in r[11:]))
                for r in conn.execute(stmt)]


def _count(store: Store, watermark: int) -> int:
    """Rows with id <= watermark, as all rows minus the newer ones (a bare count(*) reads the smallest index)."""
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(Usage)).scalar_one()
        newer = conn.execute(select(func.count()).where(_U.id > watermark)).scalar_one()
    return int(total) - int(newer)


def _cost(store: Store, watermark: int) -> float:
    stmt = select(func.coalesce(func.sum(_U.cost_usd), 0.0)).where(_U.id <= watermark)
    with store.engine.connect() as conn:
        return float(conn.execute(stmt).scalar_one())


def _max_id(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(_U.id), 0))).scalar_one())


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


def refresh_cache(store: Store, home: Path, *, deep: bool = False) -> tuple[Path, str]:
    """Bring the cache up to date with the store; returns its path and a token naming its state.

    Rows below the watermark are checked by count on every call (a deleted row, or a row
    committed late with a lower id, rebuilds the cache) and, with `deep`, by total cost too.
    """
    path = cache_path(store, home)
    with _lock:
        conn = _open_cache(path)
        try:
            # read and write under one lock: two processes must not merge the same new rows twice
            conn.execute("BEGIN IMMEDIATE")
            meta = _meta(conn)
            top = _max_id(store)
            wm = int(meta.get("watermark", "0")) if meta.get("version") == CACHE_VERSION else -1
            valid = 0 <= wm <= top and str(_count(store, wm)) == meta.get("count")
            if valid and deep:
                valid = abs(_cost(store, wm) - float(meta.get("cost", "nan"))) < 1e-6 * max(1.0, _cost(store, wm))
            if valid and top == wm:
                conn.execute("ROLLBACK")
                return path, f"{wm}:{meta['count']}:{float(meta['cost']):.6f}"
            n, cost = (int(meta["count"]), float(meta["cost"])) if valid else (0, 0.0)
            if not valid:
                conn.execute("DELETE FROM cube")
                wm = 0
            rows = _aggregate(store, [_U.id > wm, _U.id <= top]) if top > wm else []
            _merge(conn, rows)
            n += sum(int(r[8]) for r in rows)
            cost += sum(float(r[10]) for r in rows)
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("version", CACHE_VERSION), ("watermark", str(top)), ("count", str(n)), ("cost", repr(cost))])
            conn.execute("COMMIT")
            return path, f"{top}:{n}:{cost:.6f}"
        finally:
            conn.close()


def _read_full(path: Path, token: str) -> pd.DataFrame:
    """The whole cached cube as a frame with categorical dimensions; memoised per state token.

    A snapshot in .npz (plain arrays, no pickle) beside the cache makes a fresh process's
    first load fast; it is rewritten whenever the token changes.
    """
    memo = _memo.get(path)
    if memo is not None and memo[0] == token:
        return memo[1]
    snap = path.with_suffix(".npz")
    frame = None
    if snap.exists():
        try:
            with np.load(snap, allow_pickle=False) as z:
                if str(z["token"]) == token:
                    frame = pd.DataFrame({
                        **{k: pd.Categorical.from_codes(z[f"{k}_codes"], categories=z[f"{k}_cats"]) for k in KEYS},
                        **{m: z[m] for m in MEASURES}})
        except (OSError, ValueError, KeyError):
            frame = None
    if frame is None:
        conn = _open_cache(path)
        try:
            rows = conn.execute("SELECT * FROM cube").fetchall()
        finally:
            conn.close()
        raw = pd.DataFrame(rows, columns=KEYS + MEASURES)
        frame = pd.DataFrame({
            **{k: pd.Categorical(raw[k].replace("", None)) for k in KEYS},
            **{m: raw[m].to_numpy(dtype=float if m == "cost" else np.int64) for m in MEASURES}})
        arrays: dict[str, Any] = {"token": np.array(token)}
        for k in KEYS:
            arrays[f"{k}_codes"] = frame[k].cat.codes.to_numpy()
            arrays[f"{k}_cats"] = np.array(list(frame[k].cat.categories), dtype=str)
        for m in MEASURES:
            arrays[m] = frame[m].to_numpy()
        tmp = snap.with_name(f"{snap.name}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(snap)
    _memo[path] = (token, frame)
    return frame


def _hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _hour_key(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H")


def load_cube(store: Store, filters: Filters, home: Path, *, deep: bool = False) -> pd.DataFrame:
    """The hourly usage aggregate for `filters`: columns KEYS + MEASURES, dimensions None where unknown."""
    path, token = refresh_cache(store, home, deep=deep)
    full = _read_full(path, token)
    since, until = to_utc(filters.since), to_utc(filters.until)
    full_lo = _hour_floor(since) + (timedelta(hours=1) if since and since != _hour_floor(since) else timedelta())\
        if since else None
    full_hi = _hour_floor(until) if until else None
    mask = np.ones(len(full), dtype=bool)
    hours = full["hour"].cat
    if full_lo is not None:
        mask &= hours.codes.to_numpy() >= hours.categories.searchsorted(_hour_key(full_lo))
    if full_hi is not None:
        mask &= hours.codes.to_numpy() < hours.categories.searchsorted(_hour_key(full_hi))
    if full_lo is not None and full_hi is not None and full_lo >= full_hi:
        mask[:] = False  # the whole range sits inside one hour: all of it comes from the store
    for dim in ("agent", "model", "provider", "source", "project", "user"):
        value = _dim_filter(filters, dim)
        if value is not None:
            cats = full[dim].cat.categories
            code = cats.get_loc(value) if value in cats else -2
            mask &= full[dim].cat.codes.to_numpy() == code
    picked = full[mask]
    frame = pd.DataFrame({
        **{k: _decode(picked[k]) for k in KEYS},
        **{m: picked[m].to_numpy() for m in MEASURES}})
    edges = _edge_rows(store, filters, since, until, full_lo, full_hi)
    if edges:
        extra = pd.DataFrame(edges, columns=KEYS + MEASURES)
        for k in KEYS[1:]:
            extra[k] = extra[k].replace("", None)
        frame = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
    return frame


def _decode(col: pd.Series) -> np.ndarray:
    lookup = np.concatenate([np.asarray(col.cat.categories, dtype=object), np.array([None], dtype=object)])
    return lookup[col.cat.codes.to_numpy()]


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
        where = [_U.ts >= lo, _U.ts < hi]
        for dim in ("agent", "model", "provider", "source", "project", "user"):
            value = _dim_filter(filters, dim)
            if value is not None:
                where.append(getattr(Usage, dim) == value)
        rows.extend(_aggregate(store, where))
    return [tuple("" if v is None else v for v in r[:8]) + tuple(r[8:]) for r in rows]
