"""Evals in `loopmeter report` and on the dashboard: per suite, each configuration's summary and
every pair compared — `loopmeter.evals.report.summarize_rows`, the same function as `eval report`,
over the eval results created in the range (which may span several eval runs)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import Store
from loopmeter.store.models import EvalResult

_E: Any = EvalResult.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL


def load_results(store: Store, filters: Filters) -> list[Any]:
    """Eval results created in the range, for the filters' agent and model."""
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
    with store.session() as s:
        return list(s.scalars(select(EvalResult).where(*where).order_by(_E.suite, _E.config, _E.task_id, _E.epoch)))


def eval_summary(results: list[Any]) -> dict[str, Any]:
    """{"configs": [summary + "suite"], "comparisons": [comparison + "suite"], "stats"}; "stats" is
    "unavailable" when the statistics module cannot load."""
    try:
        from loopmeter.evals.report import cell_row, group_by_config, summarize_rows
    except ImportError:
        return {"configs": [], "comparisons": [], "stats": "unavailable"}
    suites: dict[str | None, list[Any]] = {}
    for r in results:
        suites.setdefault(r.suite, []).append(cell_row(r))
    configs, comparisons = [], []
    for suite in sorted(suites, key=lambda s: s or ""):
        groups = group_by_config(suites[suite])
        summary = summarize_rows(None, suite, sorted(groups), groups)
        configs += [{"suite": suite, **c} for c in summary["configs"]]
        comparisons += [{"suite": suite, **c} for c in summary["comparisons"]]
    return {"configs": configs, "comparisons": comparisons, "stats": "loopmeter.evals.stats"}
