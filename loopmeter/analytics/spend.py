"""Spend and tokens: totals, by dimension, over time, cache hit ratio — roll-ups of the usage cube."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

import pandas as pd

from loopmeter.analytics.cube import MEASURES

TOKEN_KINDS = ["input", "cache_read", "cache_write", "output", "reasoning"]


def cache_hit_ratio(input_tokens: float, cache_read: float, cache_write: float) -> float | None:
    """cache_read / (input + cache_read + cache_write); None when there is no input at all."""
    denom = input_tokens + cache_read + cache_write
    return None if denom <= 0 else cache_read / denom


def summary(cube: pd.DataFrame) -> dict[str, Any]:
    """Total cost (priced calls only), unpriced calls beside it, tokens by kind, cache hit ratio."""
    sums = {m: (cube[m].sum() if len(cube) else 0) for m in MEASURES}
    by_source = cube.groupby("cost_source")["cost"].sum().to_dict() if len(cube) else {}
    return {
        "cost_usd": round(float(sums["cost"]), 6),
        "calls": int(sums["calls"]),
        "unpriced_calls": int(sums["unpriced"]),
        "priced_calls": int(sums["calls"] - sums["unpriced"]),
        "tokens": {k: int(sums[k]) for k in TOKEN_KINDS},
        "cache_hit_ratio": cache_hit_ratio(sums["input"], sums["cache_read"], sums["cache_write"]),
        "cost_by_provenance": {k: round(float(v), 6) for k, v in sorted(by_source.items()) if k != "unpriced"},
    }


def by_dimension(cube: pd.DataFrame, dim: str) -> pd.DataFrame:
    """One row per value of `dim` (agent, model, provider, source, project, user), costliest first."""
    cols = [dim, "calls", "unpriced", "cost", *TOKEN_KINDS]
    if not len(cube):
        return pd.DataFrame(columns=[*cols, "cache_hit_ratio", "share"])
    frame = cube.assign(**{dim: cube[dim].fillna("(unknown)")}).groupby(dim, as_index=False)[cols[1:]].sum()
    denom = frame["input"] + frame["cache_read"] + frame["cache_write"]
    frame["cache_hit_ratio"] = (frame["cache_read"] / denom.where(denom > 0)).astype(float)
    total = frame["cost"].sum()
    frame["share"] = frame["cost"] / total if total > 0 else 0.0
    return frame.sort_values(["cost", "calls", dim], ascending=[False, False, True]).reset_index(drop=True)


def _period_start(hours: pd.Series, period: str, tz: tzinfo) -> pd.Series:
    uniq = pd.Series(hours.unique())
    local = pd.to_datetime(uniq, format="%Y-%m-%d %H", utc=True).dt.tz_convert(tz)
    if period == "hour":
        starts = local.dt.strftime("%Y-%m-%d %H:00")
    elif period == "day":
        starts = local.dt.strftime("%Y-%m-%d")
    elif period == "week":  # ISO week, labelled by its Monday
        monday = local.dt.normalize() - pd.to_timedelta(local.dt.day_of_week, unit="D")
        starts = monday.dt.strftime("%Y-%m-%d")
    elif period == "month":
        starts = local.dt.strftime("%Y-%m")
    else:
        raise ValueError(f"unknown period {period!r}")
    return hours.map(dict(zip(uniq, starts, strict=True)))


def over_time(cube: pd.DataFrame, period: str = "day", by: str | None = None, tz: Any = None) -> pd.DataFrame:
    """Cost, calls and tokens per day/week/month (local to `tz`), optionally split by a dimension."""
    from datetime import UTC

    keys = ["period"] + ([by] if by else [])
    cols = ["calls", "unpriced", "cost", *TOKEN_KINDS]
    if not len(cube):
        return pd.DataFrame(columns=[*keys, *cols])
    frame = cube.assign(period=_period_start(cube["hour"], period, tz or UTC))
    if by:
        frame[by] = frame[by].fillna("(unknown)")
    return frame.groupby(keys, as_index=False)[cols].sum().sort_values(keys).reset_index(drop=True)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: numpy scalars to Python, NaN to None."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and v != v:
                v = None
            clean[str(k)] = v
        out.append(clean)
    return out
