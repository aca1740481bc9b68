"""Runs: the list, one run in detail (attempts, iterations, spans, diff), and whether any is active."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import case, func, select

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.analytics.work import iterations_done, work_cost
from loopmeter.store import Store
from loopmeter.store.models import Attempt, Iteration, Run, Span
from loopmeter.vocab import AttemptStatus, RunStatus

_A: Any = Attempt.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL
_R: Any = Run.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL
_I: Any = Iteration.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL
_S: Any = Span.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL

ACTIVE = (RunStatus.RUNNING,)  # a run row is written when the run starts
RUN_COLUMNS = ["id", "kind", "task", "user", "repo", "status", "started_at", "ended_at", "attempts", "passed",
               "cost_usd", "unpriced_calls"]


def run_conditions(filters: Filters) -> list[Any]:
    where: list[Any] = []
    since, until = to_utc(filters.since), to_utc(filters.until)
    if since is not None:
        where.append(_R.started_at >= since)
    if until is not None:
        where.append(_R.started_at < until)
    if filters.user is not None:
        where.append(_R.user == filters.user)
    if filters.repo is not None:
        where.append(_R.repo == filters.repo)
    return where


def list_runs(store: Store, filters: Filters, limit: int = 500, status: str | None = None) -> pd.DataFrame:
    """Newest runs first, with attempt counts and cost (agent/model/project filters select runs having one)."""
    where = run_conditions(filters)
    if status is not None:
        where.append(_R.status == status)
    att_where = [c for c in (
        _A.agent == filters.agent if filters.agent else None,
        _A.model == filters.model if filters.model else None,
        _A.project == filters.project if filters.project else None,
    ) if c is not None]
    agg = (
        select(_A.run_id, func.count().label("n"),
               func.sum(case((_A.status == AttemptStatus.PASSED, 1), else_=0)).label("ok"),
               func.sum(_A.cost_usd).label("cost"), func.sum(_A.unpriced_calls).label("unpriced"))
        .where(*att_where)
        .group_by(_A.run_id)
        .subquery()
    )
    join_kind = not att_where  # with attempt filters, only runs that have a matching attempt
    stmt = (
        select(_R.id, _R.kind, _R.task, _R.user, _R.repo, _R.status, _R.started_at, _R.ended_at,
               func.coalesce(agg.c.n, 0), func.coalesce(agg.c.ok, 0), agg.c.cost, func.coalesce(agg.c.unpriced, 0))
        .join(agg, agg.c.run_id == _R.id, isouter=join_kind)
        .where(*where)
        .order_by(_R.started_at.desc(), _R.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=RUN_COLUMNS)
    frame["cost_usd"] = [work_cost(c, n) for c, n in zip(frame["cost_usd"], frame["unpriced_calls"], strict=True)]
    return frame


def active_runs(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Run).where(_R.status.in_(ACTIVE))).scalar_one())


def _dicts(objs: list[Any]) -> list[dict[str, Any]]:
    return [o.model_dump() for o in objs]


def run_detail(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run, its attempts (with parsed diffstat), iterations per attempt, spans, and a diff if git has it."""
    with store.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            return None
        attempts = list(s.execute(select(Attempt).where(_A.run_id == run_id).order_by(_A.id)).scalars())
        ids = [a.id for a in attempts]
        iterations = list(s.execute(
            select(Iteration).where(_I.attempt_id.in_(ids)).order_by(_I.attempt_id, _I.n)
        ).scalars()) if ids else []
        spans = list(s.execute(select(Span).where(_S.run_id == run_id).order_by(_S.start_ns)).scalars())
    att = _dicts(attempts)
    for a in att:
        try:
            a["diffstat"] = json.loads(a["diffstat"]) if a["diffstat"] else None
        except ValueError:
            a["diffstat"] = None
    by_attempt: dict[str, list[dict[str, Any]]] = {}
    for it in _dicts(iterations):
        by_attempt.setdefault(it["attempt_id"], []).append(it)
    for a in att:
        a["cost_usd"] = work_cost(a["cost_usd"], a["unpriced_calls"])
        a["iterations"] = iterations_done(a["iterations"], len(by_attempt.get(a["id"], [])))
    return {"run": run.model_dump(), "attempts": att, "iterations": by_attempt, "spans": _dicts(spans)}


def attempt_diff(repo: str | None, attempt: dict[str, Any], max_chars: int = 200_000) -> str | None:
    """`git diff base..head` (or base..branch) of an attempt, when its repo is on this machine."""
    if not repo or not Path(repo).is_dir():
        return None
    base = attempt.get("base_commit")
    head = attempt.get("head_commit") or attempt.get("branch")
    if not base or not head:
        return None
    from loopmeter.hostgit import HostGit, repo_layout

    try:
        text = HostGit(repo_layout(Path(repo)))("diff", "--no-ext-diff", "--no-textconv", base, head, "--")
    except Exception:  # noqa: BLE001 - a missing branch or commit means no diff to show
        return None
    return text[:max_chars]
