"""The Vendors section of the dashboard and of every report: spend per UTC day, vendor and tier
(under the one tier rule, analytics/tiers.py `decide`), active users and credits from the
vendors' own figures (vendor_usage), and a line per vendor.

`section(store, filters, data)` gives plain JSON-ready data; the dashboard's Vendors tab and the
report formats only format it (money through reports/fmt.py).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from loopmeter.analytics import tiers
from loopmeter.analytics.filters import Filters
from loopmeter.analytics.sums import Db
from loopmeter.analytics.vendors import cycle_checks
from loopmeter.vocab import Tier


def activity(store: Any, filters: Filters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Active users (people or keys the vendor named) and credits, per (date, vendor) and per vendor
    over the range. Empty under a filter vendor figures cannot answer (agent, source, ...)."""
    day_cols, vendor_cols = ["date", "vendor", "active_users", "credits", "rows"], ["vendor", "users", "credits", "rows"]
    if any(getattr(filters, dim) for dim in tiers.NOT_IN_VENDOR_FIGURES):
        return pd.DataFrame(columns=day_cols), pd.DataFrame(columns=vendor_cols)
    where, params = tiers.scope_where(filters)
    measures = f"count(DISTINCT {tiers.PERSON}), sum(credits), count(*)"
    db = Db(store)
    try:
        per_day = db.rows(f"SELECT date, vendor, {measures} FROM vendor_usage WHERE {where} GROUP BY date, vendor",
                          params)
        per_vendor = db.rows(f"SELECT vendor, {measures} FROM vendor_usage WHERE {where} GROUP BY vendor", params)
    finally:
        db.close()
    return pd.DataFrame(per_day, columns=day_cols), pd.DataFrame(per_vendor, columns=vendor_cols)


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 6)


def _tiers_text(used: set[str]) -> str | None:
    """The tiers a total came from, best first: 'billed', 'billed + calculated'."""
    names = [t.value for t in Tier if t.value in used]
    return " + ".join(names) if names else None


def section(store: Any, filters: Filters, data: Any) -> dict[str, Any]:
    """{"days": [...], "vendors": [...]}: per (UTC day, vendor) the figure the tier rule picks and
    its tier, beside each tier's own sum, active users and credits; per vendor the totals.
    `data` is the loaded kpis.Data (its usage cube and vendor figures)."""
    cached = data.extra.get("vendor_section")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    spend = data.extra["spend"]  # analytics/spend_box.py, computed when the data was loaded
    decided = pd.DataFrame(spend.decided, columns=tiers.DECIDED_COLUMNS)
    per_day, per_vendor = activity(store, filters)
    merged = decided.merge(per_day, on=["date", "vendor"], how="outer") if len(per_day) else decided.assign(
        active_users=None, credits=None, rows=None)
    days = []
    for r in merged.sort_values(["date", "vendor"], ascending=[False, True]).to_dict("records"):
        tier = r.get("tier") if isinstance(r.get("tier"), str) else None
        if tier is None and not pd.isna(r.get("rows")):  # no money that day: credits and users are the vendor's
            tier = Tier.VENDOR.value
        days.append({
            "date": r["date"], "vendor": r["vendor"], "tier": tier,
            "cost_usd": _num(r.get("cost_usd")), "billed_usd": _num(r.get("billed_usd")),
            "vendor_usd": _num(r.get("vendor_usd")), "measured_usd": _num(r.get("measured_usd")),
            "credits": _num(r.get("credits")),
            "active_users": None if pd.isna(r.get("active_users")) else int(r["active_users"]),
        })
    users = {row["vendor"]: row for row in per_vendor.to_dict("records")}
    vendors = []
    for name in sorted({d["vendor"] for d in days}):
        mine = [d for d in days if d["vendor"] == name]
        priced = [d for d in mine if d["cost_usd"] is not None]
        active = [d["active_users"] for d in mine if d["active_users"] is not None]

        def total(column: str, rows: list[dict[str, Any]] = mine) -> float | None:
            values = [d[column] for d in rows if d[column] is not None]
            return round(sum(values), 6) if values else None

        vendors.append({
            "vendor": name, "tier": _tiers_text({d["tier"] for d in mine if d["tier"]}),
            "cost_usd": total("cost_usd", priced), "billed_usd": total("billed_usd"),
            "vendor_usd": total("vendor_usd"), "measured_usd": total("measured_usd"), "credits": total("credits"),
            "users": int(users[name]["users"]) if name in users else None,
            "active_users_per_day": round(sum(active) / len(active), 2) if active else None,
            "days": len(mine),
        })
    result = {"days": days, "vendors": vendors, "checks": cycle_checks(store),
              "synced": len(per_vendor) > 0 or len(spend.vendor) > 0}
    data.extra["vendor_section"] = result
    return result
