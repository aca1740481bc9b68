"""Experiment velocity: experiments per person per week, time to signal/green, iterations, success."""

from __future__ import annotations

from typing import Any

import pandas as pd

from loopmeter.analytics.attempts import FINISHED


def _q(series: pd.Series, q: float) -> float | None:
    s = series.dropna()
    return None if s.empty else float(s.quantile(q))


def velocity(attempts: pd.DataFrame) -> dict[str, Any]:
    finished = attempts[attempts["status"].isin(FINISHED)]
    passed = finished[finished["status"] == "passed"]
    errors = int((finished["status"] == "error").sum())
    weekly = experiments_per_week(attempts)
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


def experiments_per_week(attempts: pd.DataFrame) -> pd.DataFrame:
    """Finished attempts per ISO week (labelled by its Monday, UTC) and person."""
    done = attempts[attempts["status"].isin(FINISHED) & attempts["ended_at"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["week", "user", "experiments"])
    ended = done["ended_at"].dt.tz_convert("UTC")
    week = (ended.dt.normalize() - pd.to_timedelta(ended.dt.day_of_week, unit="D")).dt.strftime("%Y-%m-%d")
    frame = pd.DataFrame({"week": week, "user": done["user"].fillna("(unknown)")})
    return frame.groupby(["week", "user"], as_index=False).size().rename(columns={"size": "experiments"})
