"""Attempts in scope (with their run and merged outcome) as one pandas frame; filtering is SQL."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from sqlalchemy import and_, func, select

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import Store
from loopmeter.store.models import Attempt, Outcome, Run

FINISHED = ("passed", "failed", "error", "budget", "timeout", "cancelled")
COLUMNS = ["id", "run_id", "agent", "model", "user", "project", "status", "iterations", "wall_s",
           "time_to_signal_s", "time_to_green_s", "iterations_to_green", "input_tokens", "cache_read_tokens",
           "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "unpriced_calls",
           "started_at", "ended_at", "applied_at", "run_kind", "repo", "run_started_at", "run_config",
           "merged_at", "outcome_sha"]


def attempt_conditions(filters: Filters) -> list[Any]:
    where: list[Any] = []
    since, until = to_utc(filters.since), to_utc(filters.until)
    if since is not None:
        where.append(Attempt.started_at >= since)
    if until is not None:
        where.append(Attempt.started_at < until)
    for dim in ("agent", "model", "user", "project"):
        value = getattr(filters, dim)
        if value is not None:
            where.append(getattr(Attempt, dim) == value)
    if filters.repo is not None:
        where.append(Run.repo == filters.repo)
    if filters.source is not None and filters.source != "loop":
        where.append(Attempt.id.is_(None))  # attempts are loop work; another source selects none
    return where


def load_attempts(store: Store, filters: Filters) -> pd.DataFrame:
    """One row per attempt started in the range, with run kind/repo/start/config and merge time."""
    merged = (
        select(Outcome.run_id, func.min(Outcome.merged_at).label("merged_at"), func.min(Outcome.sha).label("sha"))
        .where(Outcome.merged_at.is_not(None))
        .group_by(Outcome.run_id)
        .subquery()
    )
    stmt = (
        select(
            Attempt.id, Attempt.run_id, Attempt.agent, Attempt.model, Attempt.user, Attempt.project,
            Attempt.status, Attempt.iterations, Attempt.wall_s, Attempt.time_to_signal_s,
            Attempt.time_to_green_s, Attempt.iterations_to_green, Attempt.input_tokens,
            Attempt.cache_read_tokens, Attempt.cache_write_tokens, Attempt.output_tokens,
            Attempt.reasoning_tokens, Attempt.cost_usd, Attempt.unpriced_calls, Attempt.started_at,
            Attempt.ended_at, Attempt.applied_at, Run.kind, Run.repo, Run.started_at, Run.config,
            merged.c.merged_at, merged.c.sha,
        )
        .select_from(Attempt)
        .join(Run, Run.id == Attempt.run_id, isouter=True)
        .join(merged, merged.c.run_id == Attempt.run_id, isouter=True)
        .where(and_(*attempt_conditions(filters)) if attempt_conditions(filters) else True)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS)
    for col in ("started_at", "ended_at", "applied_at", "run_started_at", "merged_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
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
