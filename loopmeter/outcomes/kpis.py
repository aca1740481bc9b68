"""Product KPIs from attributed PRs, per agent (and model, user, repository), with the PRs no
agent touched as the baseline row; and the A/B of two agents on them. Formulas: docs/metrics.md."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from loopmeter.evals import stats
from loopmeter.outcomes.attribution import PR, Attribution, Spend

BASELINE = "none"  # the row of PRs no agent touched
DIMENSIONS = ("agent", "model", "user", "repo")


def _keys(pr: PR, dim: str) -> list[str]:
    if dim == "agent":
        return pr.agents or [BASELINE]
    if dim == "model":
        return sorted(pr.models) or ([BASELINE] if not pr.agents else ["unknown"])
    if dim == "user":
        return [pr.author or "unknown"]
    return [pr.repo]


def _p(values: list[float], q: float) -> float | None:
    return stats.percentile(values, q)


def group_kpis(name: str, prs: list[PR]) -> dict[str, Any]:
    merged = [p for p in prs if p.state == "merged"]
    closed = [p for p in prs if p.state == "closed"]
    decided = len(merged) + len(closed)
    ci = stats.wilson(len(merged), decided) if decided else None
    ttm = [t for t in (p.time_to_merge_s for p in merged) if t is not None]
    ttr = [t for t in (p.time_to_first_review_s for p in prs) if t is not None]
    reverted = sum(1 for p in merged if p.reverted_within_window)
    costed = [p for p in prs if p.costed]
    costed_merged = sum(1 for p in costed if p.state == "merged")
    spend = Spend()
    for p in costed:
        spend.add(p.spend)
    cost = spend.cost
    return {
        "agent": name, "prs": len(prs), "merged": len(merged), "closed": len(closed),
        "open": len(prs) - decided,
        "merge_rate": len(merged) / decided if decided else None,
        "merge_rate_ci": list(ci) if ci else None,
        "p50_time_to_first_review_s": _p(ttr, 50),
        "p50_time_to_merge_s": _p(ttm, 50), "p90_time_to_merge_s": _p(ttm, 90),
        "review_rounds_mean": sum(p.changes_requested for p in prs) / len(prs) if prs else None,
        "commits_after_review_mean": sum(p.commits_after_review for p in prs) / len(prs) if prs else None,
        "reverted": reverted, "revert_rate": reverted / len(merged) if merged else None,
        "costed_prs": len(costed), "cost_usd": cost, "unpriced_calls": spend.unpriced_calls,
        "cost_per_merged_pr_usd": cost / costed_merged if cost is not None and costed_merged else None,
        "tokens_per_merged_pr": spend.tokens / costed_merged if costed_merged else None,
    }


def by(prs: Iterable[PR], dim: str = "agent") -> list[dict[str, Any]]:
    """One KPI row per value of `dim`; the baseline row (no agent) last."""
    groups: dict[str, list[PR]] = defaultdict(list)
    for pr in prs:
        for key in _keys(pr, dim):
            groups[key].append(pr)
    names = sorted(k for k in groups if k != BASELINE) + ([BASELINE] if BASELINE in groups else [])
    rows = [group_kpis(k, groups[k]) for k in names]
    if dim != "agent":
        for r in rows:
            r[dim] = r.pop("agent")
    return rows


def summary(att: Attribution) -> dict[str, Any]:
    """`loopmeter outcomes --json`."""
    un = att.unattributed
    attributed = Spend()
    for p in att.prs:
        if p.costed:
            attributed.add(p.spend)
    return {
        "by_agent": by(att.prs, "agent"),
        **{f"by_{d}": by(att.prs, d) for d in DIMENSIONS if d != "agent"},
        "attribution": {label: sum(1 for p in att.prs if p.attribution == label)
                        for label in ("session", "loop", "trailer", "author", "none")},
        "attributed_cost_usd": attributed.cost, "attributed_unpriced_calls": attributed.unpriced_calls,
        "unattributed_cost_usd": un.cost, "unattributed_unpriced_calls": un.unpriced_calls,
        "unattributed_sessions": att.unattributed_sessions,
        "total_cost_usd": att.total.cost,
    }


def _proportion(name: str, a: tuple[int, int], b: tuple[int, int], na: str, nb: str) -> dict[str, Any]:
    d, ci, se = stats.proportion_difference(a[0], a[1], b[0], b[1])
    return {"metric": name, "a": a[0] / a[1] if a[1] else None, "b": b[0] / b[1] if b[1] else None,
            "n_a": a[1], "n_b": b[1], "diff": d if ci else None, "ci": list(ci) if ci else None,
            "mde": stats.mde(se) if se else None, "verdict": stats.verdict(na, nb, d, ci)}


def compare(att: Attribution, a: str, b: str, *, n_boot: int = stats.N_BOOT) -> dict[str, Any]:
    """B minus A on merge rate, revert rate (higher is worse) and median time to merge (lower is better)."""
    def of(agent: str) -> list[PR]:
        return [p for p in att.prs if agent in (p.agents or [BASELINE])]

    pa, pb = of(a), of(b)

    def counts(prs: list[PR], hit: Callable[[PR], bool], base: Callable[[PR], bool]) -> tuple[int, int]:
        pool = [p for p in prs if base(p)]
        return sum(1 for p in pool if hit(p)), len(pool)

    def decided(p: PR) -> bool:
        return p.state in ("merged", "closed")

    def is_merged(p: PR) -> bool:
        return p.state == "merged"

    merge = _proportion("merge_rate", counts(pa, is_merged, decided), counts(pb, is_merged, decided), a, b)
    revert = _proportion("revert_rate", counts(pa, lambda p: p.reverted_within_window, is_merged),
                         counts(pb, lambda p: p.reverted_within_window, is_merged), a, b)
    if revert["verdict"] != stats.NO_DIFFERENCE:  # more reverts is worse
        revert["verdict"] = f"{a if revert['diff'] > 0 else b} better"
    ta = [t for t in (p.time_to_merge_s for p in pa) if t is not None]
    tb = [t for t in (p.time_to_merge_s for p in pb) if t is not None]
    d, ci, se = stats.median_difference(ta, tb, n_boot=n_boot)
    ttm_verdict = stats.NO_DIFFERENCE if ci is None or ci[0] <= 0 <= ci[1] else \
        f"{a if (d or 0) > 0 else b} faster"
    ttm = {"metric": "median_time_to_merge_s", "a": _p(ta, 50), "b": _p(tb, 50), "n_a": len(ta), "n_b": len(tb),
           "diff": d, "ci": list(ci) if ci else None, "mde": stats.mde(se) if se else None, "verdict": ttm_verdict}
    return {"a": a, "b": b, "prs_a": len(pa), "prs_b": len(pb), "comparisons": [merge, revert, ttm],
            "note": "B minus A; a 95% interval that contains 0 reads 'no detectable difference'"}


def attribute_for(store: Any, filters: Any = None) -> Attribution:
    """`attribution.attribute` under the dashboard's and reports' filters (analytics/filters.py):
    PRs created in the range, the range's calls, the agent and user filters."""
    from loopmeter.outcomes.attribution import attribute

    if filters is None:
        return attribute(store)
    return attribute(store, since=filters.since, until=filters.until, agent=filters.agent, user=filters.user)


def headline(store: Any, filters: Any = None) -> dict[str, Any] | None:
    """Cost per merged PR over attributed PRs, with the unattributed spend beside it: the
    Overview's box and the report's section, under `filters` (analytics/filters.Filters).
    None when no PR was ever synced (no usage read)."""
    if not has_prs(store):
        return None
    att = attribute_for(store, filters)
    out = summary(att)
    costed = [p for p in att.prs if p.costed]
    merged = sum(1 for p in costed if p.state == "merged")
    cost = out["attributed_cost_usd"]
    return {
        "prs": len(att.prs), "merged": sum(1 for p in att.prs if p.state == "merged"),
        "attributed_prs": len(costed), "attributed_merged": merged,
        "attributed_cost_usd": cost, "attributed_unpriced_calls": out["attributed_unpriced_calls"],
        "cost_per_merged_pr_usd": cost / merged if cost is not None and merged else None,
        "unattributed_cost_usd": out["unattributed_cost_usd"],
        "unattributed_unpriced_calls": out["unattributed_unpriced_calls"],
        "unattributed_sessions": out["unattributed_sessions"],
        "attribution": out["attribution"], "by_agent": out["by_agent"],
    }


def has_prs(store: Any) -> bool:
    """Whether any PR was synced (the usage is read only then)."""
    from sqlalchemy import select

    from loopmeter.store.models import PullRequest

    with store.engine.connect() as conn:
        return conn.execute(select(PullRequest.__table__.c.number).limit(1)).first() is not None  # type: ignore[attr-defined]
