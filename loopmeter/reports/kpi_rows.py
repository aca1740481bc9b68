"""The KPI lines of a report, as (group, name, text, raw value) — one list for md, html and csv."""

from __future__ import annotations

from typing import Any

from loopmeter.reports import fmt


def kpi_rows(r: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    s, o, c, v, w, roi = r["spend"], r["outcomes"], r["cost_per_outcome"], r["velocity"], r["wasted"], r["roi"]
    t = s["tokens"]
    rows = [
        ("spend", "cost", fmt.money(s["cost_usd"], s["unpriced_calls"]), s["cost_usd"]),
        *_tier_rows(s),
        ("spend", "model calls", fmt.num(s["calls"]), s["calls"]),
        ("spend", "unpriced calls", fmt.num(s["unpriced_calls"]), s["unpriced_calls"]),
        ("spend", "tokens: input (non-cached)", fmt.tokens(t["input"]), t["input"]),
        ("spend", "tokens: cache read", fmt.tokens(t["cache_read"]), t["cache_read"]),
        ("spend", "tokens: cache write", fmt.tokens(t["cache_write"]), t["cache_write"]),
        ("spend", "tokens: output", fmt.tokens(t["output"]), t["output"]),
        ("spend", "tokens: reasoning (inside output)", fmt.tokens(t["reasoning"]), t["reasoning"]),
        ("spend", "cache hit ratio", fmt.pct(s["cache_hit_ratio"]), s["cache_hit_ratio"]),
        ("outcomes", "verified outcomes", f"{o['verified']:,} of {o['finished']:,} finished", o["verified"]),
        ("outcomes", "applied outcomes", fmt.num(o["applied"]), o["applied"]),
        ("outcomes", "merged outcomes", fmt.num(o["merged"]), o["merged"]),
        ("outcomes", "lead time to merge p50", fmt.duration(o["lead_time_to_merge_p50_s"]), o["lead_time_to_merge_p50_s"]),
        ("outcomes", "attempt cost", fmt.money(c["cost_usd"], c["unpriced_calls"]), c["cost_usd"]),
        ("outcomes", "cost per verified outcome", fmt.money_per(c["per_verified_usd"], c["cost_usd"], c["unpriced_calls"]),
         c["per_verified_usd"]),
        ("outcomes", "cost per merged outcome", fmt.money_per(c["per_merged_usd"], c["cost_usd"], c["unpriced_calls"]),
         c["per_merged_usd"]),
        ("velocity", "experiments (attempts)", fmt.num(v["attempts"]), v["attempts"]),
        ("velocity", "experiments per person per week", fmt.num(v["experiments_per_person_week"], 1),
         v["experiments_per_person_week"]),
        ("velocity", "success rate", f"{fmt.pct(v['success_rate'])} ({v['errors']:,} errors in the denominator)",
         v["success_rate"]),
        ("velocity", "time to signal p50", fmt.duration(v["time_to_signal_p50_s"]), v["time_to_signal_p50_s"]),
        ("velocity", "time to green p50", fmt.duration(v["time_to_green_p50_s"]), v["time_to_green_p50_s"]),
        ("velocity", "time to green p90", fmt.duration(v["time_to_green_p90_s"]), v["time_to_green_p90_s"]),
        ("velocity", "iterations to green p50", fmt.num(v["iterations_to_green_p50"], 1), v["iterations_to_green_p50"]),
        ("waste", "wasted spend", f"{fmt.money(w['cost_usd'], w['unpriced_attempts'], what='attempt')} "
         f"({fmt.pct(w['share'])} of attempt cost)", w["cost_usd"]),
        ("waste", "wasted tokens", fmt.tokens(w["tokens"]), w["tokens"]),
    ]
    rows += pr_rows(r.get("pull_requests"))
    if roi["shown"]:
        rows += [("roi", "value", fmt.money(roi["value_usd"]), roi["value_usd"]),
                 ("roi", "ROI = (value - cost) / cost", fmt.roi_text(roi), roi["roi"])]
    else:
        rows.append(("roi", "ROI", "not shown: no value model configured", None))
    return rows


def pr_rows(pr: dict[str, Any] | None) -> list[tuple[str, str, str, Any]]:
    """Pull requests (loopmeter.outcomes.kpis.headline): cost per merged PR over attributed PRs,
    the unattributed spend beside it."""
    if pr is None:
        return [("pull requests", "PRs", "not synced (loopmeter outcomes sync)", None)]
    cost, unpriced = pr["attributed_cost_usd"], pr["attributed_unpriced_calls"]
    return [
        ("pull requests", "PRs (merged)", f"{pr['prs']:,} ({pr['merged']:,} merged)", pr["prs"]),
        ("pull requests", "PRs with attributed cost (merged)",
         f"{pr['attributed_prs']:,} ({pr['attributed_merged']:,} merged)", pr["attributed_prs"]),
        ("pull requests", "attributed cost", fmt.money(cost, unpriced), cost),
        ("pull requests", "cost per merged PR (attributed)", fmt.money_per(pr["cost_per_merged_pr_usd"], cost, unpriced),
         pr["cost_per_merged_pr_usd"]),
        ("pull requests", "unattributed spend (no PR)",
         f"{fmt.money(pr['unattributed_cost_usd'], pr['unattributed_unpriced_calls'])} "
         f"in {pr['unattributed_sessions']:,} sessions", pr["unattributed_cost_usd"]),
    ]


def _tier_rows(s: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """When a vendor's figures made part of the cost (analytics/tiers.py): which tiers, and the measured cost."""
    tiers = s.get("tiers") or {}
    if not tiers.get("vendor_days"):
        return []
    parts = ", ".join(f"{tier} {fmt.money(usd)}" for tier, usd in tiers["by_tier"].items())
    return [("spend", "cost by tier (billed > vendor > reported > calculated)", parts, tiers["tier"]),
            ("spend", "measured cost (logs, OTLP, loops)", fmt.money(s.get("measured_usd"), s["unpriced_calls"]),
             s.get("measured_usd"))]
