"""Cost per outcome, ROI under the configured value model, and wasted spend."""

from __future__ import annotations

from typing import Any

import pandas as pd

from loopmeter.analytics.attempts import FINISHED, human_hours
from loopmeter.config import ValueModel
from loopmeter.reports.fmt import money
from loopmeter.vocab import AttemptStatus

NOT_VERIFIED = tuple(s for s in FINISHED if s is not AttemptStatus.PASSED)


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def priced_sum(costs: pd.Series) -> float | None:
    """Σ of known costs; None (unpriced, never $0) when there are rows but none has a price."""
    if len(costs) and costs.isna().all():
        return None
    return round(float(costs.fillna(0).sum()), 6)


def attempt_cost(attempts: pd.DataFrame) -> dict[str, Any]:
    """Σ attempt cost (priced calls) and the unpriced calls beside it."""
    return {"cost_usd": priced_sum(attempts["cost_usd"]),
            "unpriced_calls": int(attempts["unpriced_calls"].fillna(0).sum()),
            "unpriced_attempts": int(attempts["cost_usd"].isna().sum())}


def cost_per_outcome(attempts: pd.DataFrame, verified: int, merged: int) -> dict[str, Any]:
    cost = attempt_cost(attempts)
    return {**cost, "per_verified_usd": _div(cost["cost_usd"], verified),
            "per_merged_usd": _div(cost["cost_usd"], merged)}


def roi(attempts: pd.DataFrame, value: ValueModel, tiered: dict[str, Any] | None = None) -> dict[str, Any]:
    """ROI = (value - cost) / cost with its assumptions; `shown` is False without a value model.
    `tiered`: spend under the tier rule (analytics/tiers.py) when a vendor's figures are in the range:
    then the cost is what was paid in the range, not the attempts' measured cost."""
    cost = attempt_cost(attempts)["cost_usd"] if tiered is None else tiered["cost_usd"]
    merged = attempts.drop_duplicates("run_id")
    merged = merged[merged["merged_at"].notna()]
    out: dict[str, Any] = {"shown": False, "model": None, "value_usd": None, "cost_usd": cost, "roi": None,
                           "merged_outcomes": int(len(merged)), "assumptions": []}
    if value.value_per_merged_outcome is not None:
        out["model"] = "per_merged_outcome"
        out["value_usd"] = len(merged) * value.value_per_merged_outcome
        out["assumptions"] = [f"each merged outcome is worth {money(value.value_per_merged_outcome)}"]
    elif value.hourly_rate is not None:
        hours = [human_hours(c) for c in merged["run_config"]]
        known = [h for h in hours if h is not None]
        out["model"] = "human_hours"
        out["value_usd"] = sum(known) * value.hourly_rate
        out["assumptions"] = [f"a merged outcome saves its task's human_hours at {money(value.hourly_rate)}/hour",
                              f"{sum(known):g} human hours over {len(known)} merged outcome(s)"]
        if len(known) < len(hours):
            out["assumptions"].append(f"{len(hours) - len(known)} merged outcome(s) have no human_hours: valued at $0")
    else:
        out["assumptions"] = ["no value model configured (set value_per_merged_outcome or hourly_rate): ROI not shown"]
        return out
    out["shown"] = True
    out["roi"] = _div(out["value_usd"] - cost, cost) if cost is not None else None
    if tiered is None:
        out["assumptions"].append("cost = Σ attempt cost in the range; unpriced calls are not in it")
    else:
        used = ", ".join(f"{t} {money(v)}" for t, v in tiered["by_tier"].items())
        out["assumptions"].append("cost = spend in the range, per day and vendor from the best tier "
                                  f"(billed > vendor > reported > calculated): {used}")
    return out


def waste_mask(attempts: pd.DataFrame) -> pd.Series:
    """Attempts whose spend produced nothing used: not verified, or verified but beaten by an applied sibling."""
    failed = attempts["status"].isin(NOT_VERIFIED)
    applied_runs = set(attempts.loc[attempts["applied_at"].notna(), "run_id"])
    unused = (attempts["status"] == AttemptStatus.PASSED) & attempts["applied_at"].isna() & attempts["run_id"].isin(applied_runs)
    return failed | unused


def wasted_spend(attempts: pd.DataFrame) -> dict[str, Any]:
    mask = waste_mask(attempts)
    wasted = attempts[mask]
    reasons = wasted["status"].where(wasted["status"] != AttemptStatus.PASSED, "unapplied")
    by_reason = {str(k): priced_sum(g) for k, g in wasted["cost_usd"].groupby(reasons)}
    tokens = wasted[["input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens"]].sum().sum()
    total = attempt_cost(attempts)["cost_usd"]
    cost = priced_sum(wasted["cost_usd"])
    return {"cost_usd": cost, "unpriced_attempts": int(wasted["cost_usd"].isna().sum()), "tokens": int(tokens),
            "attempts": int(len(wasted)), "share": _div(cost, total), "by_reason": by_reason}


def by_agent(attempts: pd.DataFrame, usage_by_agent: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-agent table: attempts, success rate, $/verified, p50 to green, cache hit, wasted $."""
    rows = []
    mask = waste_mask(attempts)
    hit = {} if usage_by_agent is None or usage_by_agent.empty else \
        dict(zip(usage_by_agent["agent"], usage_by_agent["cache_hit_ratio"], strict=True))
    for agent, group in attempts.groupby("agent", sort=True):
        finished = group[group["status"].isin(FINISHED)]
        verified = int((finished["status"] == AttemptStatus.PASSED).sum())
        cost = priced_sum(group["cost_usd"])
        ttg = group.loc[group["status"] == AttemptStatus.PASSED, "time_to_green_s"].dropna()
        rows.append({
            "agent": agent, "attempts": int(len(group)), "verified": verified,
            "success_rate": _div(verified, len(finished)), "cost_usd": cost,
            "unpriced_calls": int(group["unpriced_calls"].sum()),
            "per_verified_usd": _div(cost, verified),
            "time_to_green_p50_s": float(ttg.quantile(0.5)) if len(ttg) else None,
            "cache_hit_ratio": hit.get(agent),
            "wasted_usd": priced_sum(group.loc[mask[group.index], "cost_usd"]),
        })
    cols = ["agent", "attempts", "verified", "success_rate", "cost_usd", "unpriced_calls", "per_verified_usd",
            "time_to_green_p50_s", "cache_hit_ratio", "wasted_usd"]
    return pd.DataFrame(rows, columns=cols).sort_values(["attempts", "agent"], ascending=[False, True]) \
        .reset_index(drop=True)
