"""Evals view: pass rate with a 95% interval per (suite, configuration), and paired A/B per suite.

The statistics are loopmeter.evals.stats (owned by the evals part); this module only groups rows.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd
from sqlalchemy import select

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import Store
from loopmeter.store.models import EvalResult

_E: Any = EvalResult.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL

COLUMNS = ["suite", "config", "agent", "model", "task_id", "epoch", "passed", "score", "wall_s", "cost_usd",
           "error_kind"]


def load_results(store: Store, filters: Filters) -> pd.DataFrame:
    where: list[Any] = []
    since, until = to_utc(filters.since), to_utc(filters.until)
    if since is not None:
        where.append(_E.created_at >= since)
    if until is not None:
        where.append(_E.created_at < until)
    if filters.agent:
        where.append(_E.agent == filters.agent)
    if filters.model:
        where.append(_E.model == filters.model)
    stmt = select(*[getattr(EvalResult, c) for c in COLUMNS]).where(*where)
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS)


def _scores(group: pd.DataFrame) -> dict[str, list[float]]:
    score = group["score"].where(group["score"].notna(), group["passed"].astype(float)).fillna(0.0)
    out: dict[str, list[float]] = {}
    for task, s in zip(group["task_id"], score, strict=True):
        out.setdefault(task, []).append(float(s))
    return out


def eval_summary(results: pd.DataFrame) -> dict[str, Any]:
    """{"configs": [...], "comparisons": [...], "stats": "loopmeter.evals.stats" | "unavailable"}."""
    try:
        from loopmeter.evals import stats
    except ImportError:
        return {"configs": [], "comparisons": [], "stats": "unavailable"}
    configs, comparisons = [], []
    for (suite, config), group in results.groupby(["suite", "config"], sort=True, dropna=False):
        clusters = _scores(group)
        flat = [s for c in clusters.values() for s in c]
        lo, hi = stats.pass_rate_ci(list(clusters.values()))
        solved = sum(1 for c in clusters.values() if max(c) >= 1)
        cost = group["cost_usd"]
        configs.append({
            "suite": suite, "config": config, "tasks": len(clusters), "samples": len(flat),
            "pass_rate": sum(flat) / len(flat) if flat else None, "ci_low": lo, "ci_high": hi,
            "errors": int(group["error_kind"].notna().sum()),
            "cost_usd": None if cost.isna().all() else float(cost.fillna(0).sum()),
            "unpriced_samples": int(cost.isna().sum()),
            "cost_per_task_usd": None if cost.isna().all() else float(cost.fillna(0).sum()) / max(len(clusters), 1),
            "cost_per_solved_usd": None if cost.isna().all() or not solved else float(cost.fillna(0).sum()) / solved,
            "wall_p50_s": stats.percentile(group["wall_s"].dropna().tolist(), 50),
            "wall_p95_s": stats.percentile(group["wall_s"].dropna().tolist(), 95),
        })
    for suite, group in results.groupby("suite", sort=True, dropna=False):
        names = sorted(group["config"].unique())
        for a, b in itertools.combinations(names, 2):
            sa, sb = _scores(group[group["config"] == a]), _scores(group[group["config"] == b])
            if not set(sa) & set(sb):
                continue
            comp = stats.paired_difference(a, b, sa, sb, n_boot=2000)
            comparisons.append({"suite": suite, **comp.as_dict()})
    return {"configs": configs, "comparisons": comparisons, "stats": "loopmeter.evals.stats"}
