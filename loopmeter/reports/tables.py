"""Tables shared by the markdown, HTML and CSV reports (rows already formatted)."""

from __future__ import annotations

from typing import Any

from loopmeter.reports import fmt

TABLES = [
    ("agents", "By agent"),
    ("spend_by_day", "Spend by day"),
    ("by.model", "By model"),
    ("by.provider", "By provider"),
    ("by.source", "By source"),
    ("by.project", "By project"),
    ("by.user", "By user"),
    ("experiments_per_week", "Experiments per week"),
    ("pull_requests.by_agent", "Pull requests by agent"),
]
DIM_HEADERS = ["calls", "cost", "unpriced calls", "input", "cache read", "cache write", "output", "cache hit",
               "share"]


def _get(r: dict[str, Any], key: str) -> list[dict[str, Any]]:
    if key.startswith("by."):
        return r["by"][key[3:]]
    if key.startswith("pull_requests."):
        return list((r.get("pull_requests") or {}).get(key.split(".", 1)[1], []))
    return r[key]


def table_rows(r: dict[str, Any], key: str) -> tuple[list[str], list[list[str]]]:
    rows = _get(r, key)
    if key == "agents":
        return (["agent", "attempts", "success", "cost", "$/verified", "p50 to green", "cache hit", "wasted"],
                [[a["agent"], fmt.num(a["attempts"]), fmt.pct(a["success_rate"]),
                  fmt.money(a["cost_usd"], a["unpriced_calls"]),
                  fmt.money_per(a["per_verified_usd"], a["cost_usd"], a["unpriced_calls"]),
                  fmt.duration(a["time_to_green_p50_s"]), fmt.pct(a["cache_hit_ratio"]),
                  fmt.money(a["wasted_usd"], a["unpriced_calls"], note=False)]
                 for a in rows])
    if key == "spend_by_day":
        return (["day", "calls", "cost", "unpriced calls", "input", "cache read", "output"],
                [[d["period"], fmt.num(d["calls"]), fmt.money(d["cost"], d["unpriced"], note=False), fmt.num(d["unpriced"]),
                  fmt.tokens(d["input"]), fmt.tokens(d["cache_read"]), fmt.tokens(d["output"])] for d in rows])
    if key == "pull_requests.by_agent":
        return (["agent", "PRs", "merged", "merge rate", "95% CI", "p50 to merge", "p90 to merge", "reverted",
                 "$/merged PR"],
                [["no agent (baseline)" if a["agent"] == "none" else a["agent"], fmt.num(a["prs"]),
                  fmt.num(a["merged"]), fmt.pct(a["merge_rate"]), fmt.ci(*(a["merge_rate_ci"] or (None, None))),
                  fmt.duration(a["p50_time_to_merge_s"]), fmt.duration(a["p90_time_to_merge_s"]),
                  fmt.pct(a["revert_rate"]), fmt.money_per(a["cost_per_merged_pr_usd"], a["cost_usd"], a["unpriced_calls"])]
                 for a in rows])
    if key == "experiments_per_week":
        return (["week of", "person", "experiments"],
                [[d["week"], d["user"], fmt.num(d["experiments"])] for d in rows])
    dim = key[3:]
    return ([dim, *DIM_HEADERS],
            [[d[dim], fmt.num(d["calls"]), fmt.money(d["cost"], d["unpriced"], note=False),
              fmt.num(d["unpriced"]), fmt.tokens(d["input"]), fmt.tokens(d["cache_read"]),
              fmt.tokens(d["cache_write"]), fmt.tokens(d["output"]), fmt.pct(d["cache_hit_ratio"]),
              fmt.pct(d["share"])] for d in rows])


def eval_rows(ev: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """Per (suite, configuration): the summary `eval report` shows (loopmeter.evals.report.config_summary)."""
    headers = ["suite", "configuration", "tasks", "cells", "passed", "pass rate", "95% CI", "cost",
               "cost/task", "cost/solved", "p50 time"]
    rows = [[c["suite"] or "", c["config"], fmt.num(c["n_tasks"]), fmt.num(c["n_cells"]), fmt.num(c["passed"]),
             fmt.pct(c["pass_rate"]), fmt.ci(*(c["pass_rate_ci"] or (None, None))),
             fmt.money(c["cost_usd"], c["unpriced_cells"], what="cell"),
             fmt.money(c["cost_per_task_usd"], c["unpriced_cells"], note=False),
             fmt.money(c["cost_per_solved_usd"], c["unpriced_cells"], note=False), fmt.duration(c["p50_wall_s"])]
            for c in ev["configs"]]
    comps = [comparison_text(c) for c in ev["comparisons"]]
    if ev.get("stats") == "unavailable":
        comps.append("eval statistics unavailable in this build")
    return headers, rows, comps


def comparison_text(c: dict[str, Any]) -> str:
    ci = c["ci"]
    interval = f"[{ci[0] * 100:+.0f}, {ci[1] * 100:+.0f}] pts" if ci else "no interval"
    p = "p = —" if c["p_value"] is None else f"p = {c['p_value']:.3g} ({c['p_method']})"
    return (f"{c['suite']}: {c['b']} minus {c['a']} = {c['diff'] * 100:+.1f} pts, 95% CI {interval}, "
            f"{p}, MDE {c['mde'] * 100:.0f} pts over {c['n_tasks']} tasks -> {c['verdict']}"
            + ("" if c.get("paired", True) else " (unpaired)"))


VENDOR_HEADERS = ["vendor", "spend", "tier", "billed", "vendor estimate", "measured", "credits", "people",
                  "active / day"]
VENDOR_DAY_HEADERS = ["day (UTC)", "vendor", "spend", "tier", "billed", "vendor estimate", "measured",
                      "active people", "credits"]
VENDOR_NOTE = ("Spend per UTC day and vendor comes from the best tier present: billed (the vendor's charge) > "
               "vendor (its own usage estimate) > measured (reported by the agent or calculated from tokens); "
               "two tiers are never added. Credits stay credits unless a credit price is configured.")


def vendor_rows(sec: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """The Vendors section (analytics/vendor_section.py): a row per vendor, then per UTC day and
    vendor; every row names its tier."""
    vendors = [[v["vendor"], fmt.money(v["cost_usd"]), v["tier"] or fmt.DASH, fmt.money(v["billed_usd"]),
                fmt.money(v["vendor_usd"]), fmt.money(v["measured_usd"]), fmt.num(v["credits"], 2),
                fmt.num(v["users"]), fmt.num(v["active_users_per_day"], 1)] for v in sec["vendors"]]
    days = [[d["date"], d["vendor"], fmt.money(d["cost_usd"]), d["tier"] or fmt.DASH, fmt.money(d["billed_usd"]),
             fmt.money(d["vendor_usd"]), fmt.money(d["measured_usd"]), fmt.num(d["active_users"]),
             fmt.num(d["credits"], 2)] for d in sec["days"]]
    return VENDOR_HEADERS, vendors, VENDOR_DAY_HEADERS, days


def check_text(c: dict[str, Any]) -> str:
    """One line per check, the same on every face."""
    def show(v: float | None) -> str:
        return fmt.money(v) if c["unit"] == "usd" else f"{fmt.num(v, 2)} credits"

    since = f" since {c['since']}" if c["since"] else ""
    stored = f"; stored for those days: {show(c['stored'])}" if c["stored"] is not None else ""
    return f"{c['vendor']} {c['check']}{since}: {show(c['vendor_says'])}{stored}"
