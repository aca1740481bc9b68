"""Attempts in scope (with their run and merged outcome) as one pandas frame; filtering is SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import String, func, select, type_coerce

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.analytics.work import work_cost
from loopmeter.store import Store
from loopmeter.store.models import Attempt, Outcome, Run
from loopmeter.vocab import AttemptStatus

_A: Any = Attempt.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL
_R: Any = Run.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL
_O: Any = Outcome.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL

FINISHED = tuple(s for s in AttemptStatus if s.finished)
COLUMNS = ["id", "run_id", "agent", "model", "user", "project", "status", "iterations", "wall_s",
           "time_to_signal_s", "time_to_green_s", "iterations_to_green", "input_tokens", "cache_read_tokens",
           "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "unpriced_calls",
           "started_at", "ended_at", "applied_at", "run_kind", "repo", "run_started_at", "run_config",
           "merged_at", "outcome_sha"]


def frame_from_rows(rows: Sequence[Any], columns: list[str]) -> pd.DataFrame:
    """Column-wise construction: much faster than pandas inferring types row by row."""
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(dict(zip(columns, (list(c) for c in zip(*rows, strict=True)), strict=True)))


def _raw(col: Any) -> Any:
    """The column as the driver returns it (SQLite: text); pandas parses the whole column at once,
    which is far faster than a Python datetime per row."""
    return type_coerce(col, String).label(col.key if hasattr(col, "key") else None)


def attempt_conditions(filters: Filters) -> list[Any]:
    where: list[Any] = []
    since, until = to_utc(filters.since), to_utc(filters.until)
    if since is not None:
        where.append(_A.started_at >= since)
    if until is not None:
        where.append(_A.started_at < until)
    for dim in ("agent", "model", "user", "project"):
        value = getattr(filters, dim)
        if value is not None:
            where.append(getattr(Attempt, dim) == value)
    if filters.repo is not None:
        where.append(_R.repo == filters.repo)
    if filters.source is not None and filters.source != "loop":
        where.append(_A.id.is_(None))  # attempts are loop work; another source selects none
    return where


def load_attempts(store: Store, filters: Filters) -> pd.DataFrame:
    """One row per attempt started in the range, with run kind/repo/start/config and merge time;
    `cost_usd` is `work.work_cost` ($0 for an attempt that made no model call)."""
    merged = (
        select(_O.run_id, func.min(_O.merged_at).label("merged_at"), func.min(_O.sha).label("sha"))
        .where(_O.merged_at.is_not(None))
        .group_by(_O.run_id)
        .subquery()
    )
    stmt = (
        select(
            _A.id, _A.run_id, _A.agent, _A.model, _A.user, _A.project,
            _A.status, _A.iterations, _A.wall_s, _A.time_to_signal_s,
            _A.time_to_green_s, _A.iterations_to_green, _A.input_tokens,
            _A.cache_read_tokens, _A.cache_write_tokens, _A.output_tokens,
            _A.reasoning_tokens, _A.cost_usd, _A.unpriced_calls, _raw(_A.started_at),
            _raw(_A.ended_at), _raw(_A.applied_at), _R.kind, _R.repo, _raw(_R.started_at), _R.config,
            _raw(merged.c.merged_at), merged.c.sha,
        )
        .select_from(Attempt)
        .join(Run, _R.id == _A.run_id, isouter=True)
        .join(merged, merged.c.run_id == _A.run_id, isouter=True)
        .where(*attempt_conditions(filters))
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    frame = frame_from_rows(rows, COLUMNS)
    frame["cost_usd"] = [work_cost(c, n) for c, n in zip(frame["cost_usd"], frame["unpriced_calls"], strict=True)]
    for col in ("started_at", "ended_at", "applied_at", "run_started_at", "merged_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    for col in ("cost_usd", "wall_s", "time_to_signal_s", "time_to_green_s"):
        frame[col] = frame[col].astype(float)
    return frame


def human_hours(run_config: str | None) -> float | None:
    """The task's human_hours as the loop recorded it in run.config (top level or under "task")."""
    if not run_config:
        return None
    try:
        data = json.loads(run_config)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("human_hours")
    if value is None and isinstance(data.get("task"), dict):
        value = data["task"].get("human_hours")
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
