"""Usage per (UTC hour, agent, model, provider, source, project, user, cost_source): every spend
and token figure is a pandas roll-up of this small frame.

The store keeps these sums in its `usage_hour` table, written in the same transaction as the
usage rows (loopmeter/store/rollup.py), so the first dashboard on a store of millions of rows
reads tens of thousands of sums instead of grouping every row. Each load checks that the
rollup counts as many calls as the usage table holds (and, with `deep`, the same cost) and
rebuilds it when rows arrived some other way. The hours a local day begins inside (zones
whose offset is not a whole hour) and the partial hours at the ends of a range are summed
from the calls in pieces (loopmeter/analytics/days.py), so every sum lies inside one local
day and results are exact for any range and zone.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text

from loopmeter.analytics import days
from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.analytics.sums import Db, piece_sums
from loopmeter.store import Store, rollup

KEYS = list(rollup.KEYS)
MEASURES = list(rollup.MEASURES)
_lock = threading.Lock()
_memo: dict[str, tuple[str, pd.DataFrame]] = {}  # store URL -> (state token, whole rollup frame)


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


def load_cube(store: Store, filters: Filters, home: Path | None = None, *, deep: bool = False) -> pd.DataFrame:
    """Usage for `filters` in sums that each lie inside one local day of `filters.tz`: columns
    "start" (the UTC start of the sum's hour or piece, see loopmeter/analytics/days.py), the
    dimensions (None where unknown) and MEASURES. `home` holds the frame's snapshot for the next process."""
    token = refresh_rollup(store, deep=deep)
    bounds = _bounds(store, filters)
    if bounds is None:
        return pd.DataFrame({"start": [], **{k: [] for k in KEYS[1:]}, **{m: [] for m in MEASURES}})
    plan = days.plan(filters.tz, *bounds)
    selected = filters.usage_dims()
    where = " AND ".join(["1=1", *(f'"{dim}" = :{dim}' for dim in selected)])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopmeter-pieces") as pool:
        # the pieces' calls are read while the hourly sums load (SQLite runs without the GIL)
        pieces = pool.submit(_piece_rows, store, plan, where, selected)
        frame = _whole_hours(_read_full(store, token, home), plan, selected)
        rows = pieces.result()
    if rows:
        extra = pd.DataFrame(rows, columns=["start", *KEYS[1:], *MEASURES])
        for k in KEYS[1:]:
            extra[k] = extra[k].replace("", None)
        frame = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
    return frame


def _piece_rows(store: Store, plan: days.Plan, where: str, selected: dict[str, str]) -> list[tuple[Any, ...]]:
    db = Db(store)
    try:  # dimensions as the rollup keys them: '' for unknown
        return piece_sums(db, plan.pieces, [f"coalesce(\"{k}\", '')" for k in KEYS[1:]], where, selected)
    finally:
        db.close()


def _bounds(store: Store, filters: Filters) -> tuple[datetime, datetime] | None:
    """The filters' range; an open end is the first or last stored hour. None: no usage at all."""
    since, until = to_utc(filters.since), to_utc(filters.until)
    if since is not None and until is not None:
        return since, until
    with store.engine.connect() as conn:
        first, last = conn.exec_driver_sql("SELECT min(hour), max(hour) FROM usage_hour").one()
    if first is None:
        return None
    return since or days.parse_key(first), until or days.parse_key(last) + days.HOUR


def _whole_hours(full: pd.DataFrame, plan: days.Plan, selected: dict[str, str]) -> pd.DataFrame:
    """The hourly sums the plan reads, for the selected dimension values, decoded."""
    hours = full["hour"].cat
    codes = hours.codes.to_numpy()
    mask = np.zeros(len(full), dtype=bool)
    keys = plan.hour_keys()
    if keys is not None:
        first, end = hours.categories.searchsorted(list(keys))
        mask = (codes >= first) & (codes < end)
        split = hours.categories.get_indexer(sorted(plan.split))
        mask &= ~np.isin(codes, split[split >= 0])
    for dim, value in selected.items():
        cats = full[dim].cat.categories
        mask &= full[dim].cat.codes.to_numpy() == (cats.get_loc(value) if value in cats else -2)
    picked = full[mask]
    return pd.DataFrame({
        "start": _decode(picked["hour"]), **{k: _decode(picked[k]) for k in KEYS[1:]},
        **{m: picked[m].to_numpy() for m in MEASURES}})


def _decode(col: pd.Series) -> np.ndarray:
    lookup = np.concatenate([np.asarray(col.cat.categories, dtype=object), np.array([None], dtype=object)])
    return lookup[col.cat.codes.to_numpy()]

