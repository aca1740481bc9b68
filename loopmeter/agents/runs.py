"""Runs as JSON-able objects (what `run --json`, `runs` and other parts read)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from loopmeter.errors import LoopmeterError

if TYPE_CHECKING:
    from loopmeter.store import Store

# `loopmeter run --json` prints exactly these keys (the documented run object).
ATTEMPT_KEYS = ("id", "agent", "model", "status", "stop_reason", "iterations", "input_tokens", "output_tokens",
                "cache_read_tokens", "cache_write_tokens", "cost_usd", "wall_s", "time_to_green_s", "branch")
DETAIL_KEYS = ("role", "reasoning_tokens", "unpriced_calls", "time_to_signal_s", "iterations_to_green",
               "worktree", "base_commit", "head_commit", "started_at", "ended_at", "applied_at")


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def find_run(store: Store, run_id: str) -> Any:
    """The run with this id, or the only one starting with it."""
    from sqlmodel import col, select

    from loopmeter.store import Run

    run = store.get(Run, run_id)
    if run is not None:
        return run
    with store.session() as s:
        rows = list(s.exec(select(Run).where(col(Run.id).startswith(run_id.upper())).limit(2)))
    if len(rows) == 1:
        return rows[0]
    raise LoopmeterError(f"no run {run_id}" if not rows else f"run id {run_id} is ambiguous",
                         hint="`loopmeter runs list` shows the runs")


def attempts_of(store: Store, run_id: str) -> list[Any]:
    from sqlmodel import select

    from loopmeter.store import Attempt

    with store.session() as s:
        return list(s.exec(select(Attempt).where(Attempt.run_id == run_id).order_by(Attempt.id)))  # type: ignore[arg-type]


def run_object(store: Store, run_id: str, detail: bool = False) -> dict[str, Any]:
    """{"id", "status", "task", "policy_sha256", "attempts": [...], "winner"}; detail adds
    per-attempt role, totals, diffstat, the iteration table and usage rows, plus run fields."""
    run = find_run(store, run_id)
    attempts = []
    for a in attempts_of(store, run.id):
        item = {k: getattr(a, k) for k in ATTEMPT_KEYS}
        if detail:
            item.update({k: _iso(getattr(a, k)) for k in DETAIL_KEYS})
            item["diffstat"] = json.loads(a.diffstat) if a.diffstat else None
            item["iteration_table"] = iterations_of(store, a.id)
            item["usage"] = usage_of(store, a.id)
        attempts.append(item)
    obj: dict[str, Any] = {"id": run.id, "status": run.status, "task": run.task, "policy_sha256": run.policy_sha256,
                           "attempts": attempts, "winner": run.winner_attempt_id}
    if detail:
        obj.update({"kind": run.kind, "task_id": run.task_id, "repo": run.repo, "base_commit": run.base_commit,
                    "policy": run.policy, "user": run.user, "started_at": _iso(run.started_at),
                    "ended_at": _iso(run.ended_at), "active_s": run.active_s, "config": json.loads(run.config) if run.config else None})
    return obj


def iterations_of(store: Store, attempt_id: str) -> list[dict[str, Any]]:
    from sqlmodel import select

    from loopmeter.store import Iteration

    with store.session() as s:
        rows = s.exec(select(Iteration).where(Iteration.attempt_id == attempt_id).order_by(Iteration.n))  # type: ignore[arg-type]
        return [{"n": r.n, "act_exit": r.act_exit, "act_summary": r.act_summary, "check_exit": r.check_exit,
                 "check_passed": r.check_passed, "check_output_tail": r.check_output_tail, "cost_usd": r.cost_usd,
                 "tokens": r.tokens, "started_at": _iso(r.started_at), "ended_at": _iso(r.ended_at)} for r in rows]


def usage_of(store: Store, attempt_id: str) -> list[dict[str, Any]]:
    from sqlmodel import select

    from loopmeter.store import Usage

    keys = ("key", "model", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
            "reasoning_tokens", "cost_usd", "cost_source", "latency_ms")
    with store.session() as s:
        rows = s.exec(select(Usage).where(Usage.attempt_id == attempt_id).order_by(Usage.id))  # type: ignore[arg-type]
        return [{k: getattr(r, k) for k in keys} | {"ts": _iso(r.ts)} for r in rows]


def list_runs(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first: {"id", "kind", "status", "task", "started_at", "ended_at", "agents", "winner", "cost_usd",
    "unpriced_calls"}; `cost_usd` is analytics.work.work_cost ($0 for a run that made no model call)."""
    from sqlmodel import select

    from loopmeter.analytics.work import work_cost
    from loopmeter.store import Attempt, Run

    with store.session() as s:
        runs = list(s.exec(select(Run).order_by(Run.started_at.desc()).limit(limit)))  # type: ignore[union-attr]
        ids = [r.id for r in runs]
        attempts = list(s.exec(select(Attempt).where(Attempt.run_id.in_(ids)))) if ids else []  # type: ignore[attr-defined]
    by_run: dict[str, list[Any]] = {}
    for a in attempts:
        by_run.setdefault(a.run_id, []).append(a)
    out = []
    for r in runs:
        atts = sorted(by_run.get(r.id, []), key=lambda a: a.id)
        costs = [a.cost_usd for a in atts if a.cost_usd is not None]
        unpriced = sum(a.unpriced_calls for a in atts)
        out.append({"id": r.id, "kind": r.kind, "status": r.status, "task": r.task,
                    "started_at": _iso(r.started_at), "ended_at": _iso(r.ended_at),
                    "agents": [f"{a.agent}:{a.model}" if a.model else a.agent for a in atts],
                    "winner": r.winner_attempt_id,
                    "cost_usd": work_cost(round(sum(costs), 6) if costs else None, unpriced),
                    "unpriced_calls": unpriced})
    return out
