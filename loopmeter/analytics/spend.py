"""Spend and tokens: totals, by dimension, over time, cache hit ratio — roll-ups of the usage cube."""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any

import pandas as pd

from loopmeter.analytics import days, spend_box
from loopmeter.analytics.cube import MEASURES

TOKEN_KINDS = list(spend_box.TOKEN_KINDS)


def summary(cube: pd.DataFrame) -> dict[str, Any]:
    """The cube's sums as the Spend box shows them (`spend_box.summary`)."""
    if not len(cube):
        return spend_box.summary([])
    sums = cube.groupby("cost_source", observed=True)[MEASURES].sum()
    return spend_box.summary([(source, *(float(row[m]) if m == "cost" else int(row[m]) for m in MEASURES))
                              for source, row in sums.iterrows()])


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
