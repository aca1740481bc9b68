"""Usage per (UTC hour, agent, model, provider, source, project, user, cost_source): every spend
and token figure is a pandas roll-up of this small frame.

The store keeps these sums in its `usage_hour` table, written in the same transaction as the
usage rows (loopmeter/store/rollup.py), so the first dashboard on a store of millions of rows
reads tens of thousands of sums instead of grouping every row. Each load checks that the
rollup counts as many calls as the usage table holds (and, with `deep`, the same cost) and
rebuilds it when rows arrived some other way. The hours at the edges of a date range that
does not fall on the hour are read straight from the store, so results are exact for any range.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import case, func, literal_column, select, text

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import Store, rollup
from loopmeter.store.models import Usage

_U: Any = Usage.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL

KEYS = list(rollup.KEYS)
MEASURES = list(rollup.MEASURES)
_lock = threading.Lock()
_memo: dict[str, tuple[str, pd.DataFrame]] = {}  # store URL -> (state token, whole rollup frame)


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
        # PostgreSQL sums BIGINT as NUMERIC (Decimal): plain ints and floats for the frame
        return [(*r[:8], int(r[8]), int(r[9] or 0), float(r[10]), *(int(v) for v in r[11:]))
                for r in conn.execute(stmt)]


def refresh_rollup(store: Store, *, deep: bool = False) -> str:
    """Check the store's hourly rollup against its usage rows, rebuild it if they differ, and
    return a token naming the state (usage rows, newest id, rollup cost)."""
    with store.engine.connect() as conn:
        n, top, calls, cost = rollup.state(conn)
        valid = calls == n
        if valid and deep:
            actual = rollup.usage_cost(conn)
            valid = abs(actual - cost) <= 1e-6 * max(1.0, abs(actual))
    if not valid:
        with _lock, store.engine.begin() as conn:
            if store.dialect == "postgresql":
                conn.execute(text("LOCK TABLE usage_hour IN EXCLUSIVE MODE"))
            rollup.rebuild(conn, store.dialect)
            n, top, calls, cost = rollup.state(conn)
    return f"{n}:{top}:{cost:.6f}"


def _snapshot_path(store: Store, home: Path) -> Path:
    url = store.engine.url.render_as_string(hide_password=True)
    return home / "cache" / f"usage-hour-{hashlib.sha256(url.encode()).hexdigest()[:16]}.npz"


def _categorical(values: np.ndarray) -> pd.Categorical:
    # sorted categories: load_cube finds an hour range by searchsorted on them, and the
    # rollup's rows come in whatever order their hours were first written
    codes, uniques = pd.factorize(values, sort=True)
    # '' stands for an unknown dimension in the rollup's key: None (NaN) in the frame
    keep = uniques != ""
    remap = np.full(len(uniques), -1, dtype=np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    codes = np.where(codes >= 0, remap[codes], -1) if len(uniques) else codes
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniques[keep], dtype=object))


def _from_rows(rows: list[Any]) -> pd.DataFrame:
    cols = list(zip(*rows, strict=True)) if rows else [()] * (len(KEYS) + len(MEASURES))
    frame: dict[str, Any] = {k: _categorical(np.array(cols[i], dtype=object)) for i, k in enumerate(KEYS)}
    for j, m in enumerate(MEASURES):
        frame[m] = np.array(cols[len(KEYS) + j], dtype=float if m == "cost" else np.int64)
    return pd.DataFrame(frame)


def _from_packed(n: int, packed: list[str]) -> pd.DataFrame | None:
    """The frame from rollup.fetch_packed's strings; None if a value held the separator."""
    if n == 0:
        return _from_rows([])
    dims = [col.split(rollup.UNIT_SEP) for col in packed[:len(KEYS)]]
    if any(len(d) != n for d in dims):
        return None
    frame: dict[str, Any] = {k: _categorical(np.array(d, dtype=object)) for k, d in zip(KEYS, dims, strict=True)}
    for m, col in zip(MEASURES, packed[len(KEYS):], strict=True):
        # numpy's own text parser: 7x faster than converting a list of str for integers
        values = np.fromstring(col, dtype=float if m == "cost" else np.int64, sep=",")
        if len(values) != n:
            return None
        frame[m] = values
    return pd.DataFrame(frame)


def _load_snapshot(snap: Path, token: str) -> pd.DataFrame | None:
    try:
        with np.load(snap, allow_pickle=False) as z:
            if str(z["token"]) != token:
                return None
            return pd.DataFrame({
                **{k: pd.Categorical.from_codes(z[f"{k}_codes"], categories=pd.Index(z[f"{k}_cats"], dtype=object))
                   for k in KEYS},
                **{m: z[m] for m in MEASURES}})
    except (OSError, ValueError, KeyError):
        return None


def _save_snapshot(snap: Path, token: str, frame: pd.DataFrame) -> None:
    arrays: dict[str, Any] = {"token": np.array(token)}
    for k in KEYS:
        arrays[f"{k}_codes"] = frame[k].cat.codes.to_numpy()
        arrays[f"{k}_cats"] = np.array(list(frame[k].cat.categories), dtype=str)
    for m in MEASURES:
        arrays[m] = frame[m].to_numpy()
    try:
        snap.parent.mkdir(parents=True, exist_ok=True)
        tmp = snap.with_name(f"{snap.name}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(snap)
    except OSError:
        pass  # a read-only home only loses the speed-up


def _read_full(store: Store, token: str, home: Path | None) -> pd.DataFrame:
    """The whole rollup as a frame with categorical dimensions (None where unknown); memoised
    per store and state token. A snapshot (.npz: plain arrays, no pickle) under
    `$LOOPMETER_HOME/cache` saves a fresh process the fetch of every rollup row."""
    url = store.engine.url.render_as_string(hide_password=True)
    memo = _memo.get(url)
    if memo is not None and memo[0] == token:
        return memo[1]
    snap = _snapshot_path(store, home) if home is not None else None
    frame = _load_snapshot(snap, token) if snap is not None and snap.exists() else None
    if frame is None:
        with store.engine.connect() as conn:
            packed = rollup.fetch_packed(conn)
            frame = _from_packed(*packed) if packed is not None else None
            if frame is None:
                frame = _from_rows(rollup.fetch(conn))
        if snap is not None:
            _save_snapshot(snap, token, frame)
    _memo[url] = (token, frame)
    return frame


def _hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _hour_key(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H")


def load_cube(store: Store, filters: Filters, home: Path | None = None, *, deep: bool = False) -> pd.DataFrame:
    """The hourly usage aggregate for `filters`: columns KEYS + MEASURES, dimensions None where unknown.
    `home` holds the frame's snapshot for the next process."""
    full = _read_full(store, refresh_rollup(store, deep=deep), home)
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
