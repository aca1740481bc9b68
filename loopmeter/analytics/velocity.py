"""Experiment velocity: experiments per person per week, time to signal/green, iterations, success."""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any

import pandas as pd

from loopmeter.analytics import days
from loopmeter.analytics.attempts import FINISHED
from loopmeter.vocab import AttemptStatus


def _q(series: pd.Series, q: float) -> float | None:
    s = series.dropna()
    return None if s.empty else float(s.quantile(q))


def velocity(attempts: pd.DataFrame, tz: tzinfo = UTC) -> dict[str, Any]:
    finished = attempts[attempts["status"].isin(FINISHED)]
    passed = finished[finished["status"] == AttemptStatus.PASSED]
    errors = int((finished["status"] == AttemptStatus.ERROR).sum())
    weekly = experiments_per_week(attempts, tz)
    people = weekly["user"].nunique() if len(weekly) else 0
    weeks = weekly["week"].nunique() if len(weekly) else 0
    return {
        "attempts": int(len(attempts)),
        "finished": int(len(finished)),
        "running": int((~attempts["status"].isin(FINISHED)).sum()),
        "verified": int(len(passed)),
        "errors": errors,
        "success_rate": (len(passed) / len(finished)) if len(finished) else None,
        "success_rate_excluding_errors": (len(passed) / (len(finished) - errors)) if len(finished) > errors else None,
        "time_to_signal_p50_s": _q(finished["time_to_signal_s"], 0.5),
        "time_to_green_p50_s": _q(passed["time_to_green_s"], 0.5),
        "time_to_green_p90_s": _q(passed["time_to_green_s"], 0.9),
        "iterations_to_green_p50": _q(passed["iterations_to_green"].astype(float), 0.5),
        "iterations_to_green_mean": float(passed["iterations_to_green"].astype(float).mean())
        if passed["iterations_to_green"].notna().any() else None,
        "people": int(people),
        "weeks": int(weeks),
        "experiments_per_person_week": (float(weekly["experiments"].sum()) / (people * weeks))
        if people and weeks else None,
    }


def experiments_per_week(attempts: pd.DataFrame, tz: tzinfo = UTC) -> pd.DataFrame:
    """Finished attempts per ISO week of `tz` (labelled by its Monday; loopmeter/analytics/days.py)
    and person, by the time each attempt ended."""
    done = attempts[attempts["status"].isin(FINISHED) & attempts["ended_at"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["week", "user", "experiments"])
    ended = done["ended_at"]
    weeks = days.periods(tz, ended.min().to_pydatetime(), ended.max().to_pydatetime(), "week")
    ns = ((ended - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ns")).to_numpy()
    frame = pd.DataFrame({"week": weeks.labels_of_ns(ns), "user": done["user"].fillna("(unknown)").to_numpy()})
    return frame.groupby(["week", "user"], as_index=False).size().rename(columns={"size": "experiments"})
