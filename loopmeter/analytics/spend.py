"""Spend and tokens: totals, by dimension, over time, cache hit ratio — roll-ups of the usage cube."""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any

import pandas as pd

from loopmeter.analytics import days
from loopmeter.analytics.cube import MEASURES
from loopmeter.vocab import CostSource

TOKEN_KINDS = ["input", "cache_read", "cache_write", "output", "reasoning"]


def cache_hit_ratio(input_tokens: float, cache_read: float, cache_write: float) -> float | None:
    """cache_read / (input + cache_read + cache_write); None when there is no input at all."""
    denom = input_tokens + cache_read + cache_write
    return None if denom <= 0 else cache_read / denom


def summary(cube: pd.DataFrame) -> dict[str, Any]:
    """Total cost (priced calls only; None when every call in scope is unpriced), unpriced calls
    beside it, tokens by kind, cache hit ratio."""
    sums = {m: (cube[m].sum() if len(cube) else 0) for m in MEASURES}
    by_source = cube.groupby("cost_source")["cost"].sum().to_dict() if len(cube) else {}
    priced = int(sums["calls"] - sums["unpriced"])
    return {
        "cost_usd": round(float(sums["cost"]), 6) if priced or not sums["calls"] else None,
        "calls": int(sums["calls"]),
        "unpriced_calls": int(sums["unpriced"]),
        "priced_calls": priced,
        "tokens": {k: int(sums[k]) for k in TOKEN_KINDS},
        "cache_hit_ratio": cache_hit_ratio(sums["input"], sums["cache_read"], sums["cache_write"]),
        "cost_by_provenance": {k: round(float(v), 6) for k, v in sorted(by_source.items()) if k != CostSource.UNPRICED},
    }


def _priced_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Each group's cost: its priced calls' sum to the micro-dollar, as `loopmeter usage` gives it; a
    group whose calls are all unpriced has none (NaN, None in records), never $0."""
    frame["cost"] = frame["cost"].round(6).where(frame["calls"] > frame["unpriced"])
    return frame


def by_dimension(cube: pd.DataFrame, dim: str) -> pd.DataFrame:
    """One row per value of `dim` (agent, model, provider, source, project, user), costliest first."""
    cols = [dim, "calls", "unpriced", "cost", *TOKEN_KINDS]
    if not len(cube):
        return pd.DataFrame(columns=[*cols, "cache_hit_ratio", "share"])
    frame = cube.assign(**{dim: cube[dim].fillna("(unknown)")}).groupby(dim, as_index=False)[cols[1:]].sum()
    denom = frame["input"] + frame["cache_read"] + frame["cache_write"]
    frame["cache_hit_ratio"] = (frame["cache_read"] / denom.where(denom > 0)).astype(float)
    frame = _priced_cost(frame)
    total = frame["cost"].sum()
    frame["share"] = frame["cost"] / total if total > 0 else None
    return frame.sort_values(["cost", "calls", dim], ascending=[False, False, True], na_position="last") \
        .reset_index(drop=True)


def over_time(cube: pd.DataFrame, period: days.Period = "day", by: str | None = None,
              tz: tzinfo = UTC) -> pd.DataFrame:
    """Cost, calls and tokens per local day, ISO week or month of `tz` (loopmeter/analytics/days.py),
    optionally split by a dimension."""
    keys = ["period"] + ([by] if by else [])
    cols = ["calls", "unpriced", "cost", *TOKEN_KINDS]
    if not len(cube):
        return pd.DataFrame(columns=[*keys, *cols])
    starts = cube["start"]
    frame = cube.assign(period=starts.map(days.labels(starts.unique(), tz, period)))
    if by:
        frame[by] = frame[by].fillna("(unknown)")
    frame = frame.groupby(keys, as_index=False)[cols].sum().sort_values(keys).reset_index(drop=True)
    return _priced_cost(frame)


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
