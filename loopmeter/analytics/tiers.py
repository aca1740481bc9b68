"""Spend per day and vendor by provenance tier: billed > vendor > reported > calculated.

The same calls can be seen twice: a Claude Code session in the local logs (reported or
calculated) and in the Anthropic Admin API (vendor estimate, and inside the billed cost
report). `decide` is the one place that picks, per UTC day and vendor, the best tier that
has a figure and says which, so they are never summed. Reported and calculated figures are
different calls measured locally (each call has one cost source), so they are added up
together as "measured". A billed figure covers all of a vendor's calls; a vendor figure
covers all of them too, unless its report covers one agent's calls only (Claude Code analytics:
`Report(agent=...)`, the figure's `scope`), when it stands in for that agent's measured calls
and the vendor's other measured calls are added to it.

Vendor APIs bucket by UTC day, so these days are UTC days whatever the display zone.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pandas as pd

from loopmeter.analytics import days
from loopmeter.analytics.filters import Filters
from loopmeter.vocab import Tier

# the tool vendor that bills a call, by agent (a Cursor call to a Claude model is Cursor's)
AGENT_VENDORS = {"cursor": "cursor", "cursor-agent": "cursor", "windsurf": "windsurf", "copilot": "copilot",
                 "github-copilot": "copilot"}
# else by the model provider
PROVIDER_VENDORS = {"anthropic": "anthropic", "openai": "openai", "gemini": "google", "vertex_ai": "google",
                    "google": "google"}
# scope: for a measured figure its agent; for a vendor figure the agent its report covers (None: every call)
FIGURE_COLUMNS = ["date", "vendor", "tier", "model", "user", "cost_usd", "scope"]
DECIDED_COLUMNS = ["date", "vendor", "tier", "cost_usd", "billed_usd", "vendor_usd", "measured_usd",
                   "reported_usd", "calculated_usd"]


def vendor_of(agent: Any, provider: Any) -> str:
    """Which vendor a locally measured call is paid to. Unknown dimensions may arrive as None
    or as NaN (a frame's missing value)."""
    if isinstance(agent, str) and agent.lower() in AGENT_VENDORS:
        return AGENT_VENDORS[agent.lower()]
    if isinstance(provider, str) and provider:
        return PROVIDER_VENDORS.get(provider.lower(), provider.lower())
    return "(unknown)"


def measured_figures(cube: pd.DataFrame) -> pd.DataFrame:
    """The usage cube's priced sums as figures per UTC day, vendor, tier (its cost source), model, user."""
    if not len(cube):
        return pd.DataFrame(columns=FIGURE_COLUMNS)
    priced = cube[cube["cost_source"].isin([Tier.REPORTED.value, Tier.CALCULATED.value]) & cube["cost"].notna()]
    if not len(priced):
        return pd.DataFrame(columns=FIGURE_COLUMNS)
    starts = priced["start"]
    utc_day = starts.map(days.labels(starts.unique(), UTC, "day"))
    vendors = [vendor_of(a, p) for a, p in zip(priced["agent"], priced["provider"], strict=True)]
    frame = pd.DataFrame({"date": utc_day.to_numpy(), "vendor": vendors,
                          "tier": priced["cost_source"].to_numpy(), "model": priced["model"].to_numpy(),
                          "user": priced["user"].to_numpy(), "cost_usd": priced["cost"].astype(float).to_numpy(),
                          "scope": priced["agent"].to_numpy()})
    keys = [c for c in FIGURE_COLUMNS if c != "cost_usd"]
    return frame.groupby(keys, as_index=False, dropna=False)["cost_usd"].sum()[FIGURE_COLUMNS]


def utc_days(filters: Filters) -> tuple[str | None, str | None]:
    """The UTC days a filter's range touches (a vendor day counts whole)."""
    since = filters.since.astimezone(UTC).date().isoformat() if filters.since else None
    until = (filters.until.astimezone(UTC) - timedelta(microseconds=1)).date().isoformat() if filters.until else None
    return since, until


def person(t: Any) -> Any:
    """A vendor_usage row's person: the mapped loopmeter user, else the vendor's identity."""
    from sqlalchemy import func

    return func.coalesce(t.c.user, t.c.vendor_user)


def in_scope(stmt: Any, t: Any, filters: Filters) -> Any:
    """`stmt` over vendor_usage (`t`) narrowed to the filter's UTC days, person and model."""
    since, until = utc_days(filters)
    if since:
        stmt = stmt.where(t.c.date >= since)
    if until:
        stmt = stmt.where(t.c.date <= until)
    if filters.user:
        stmt = stmt.where(person(t) == filters.user)
    if filters.model:
        stmt = stmt.where(t.c.model == filters.model)
    return stmt


def vendor_figures(store: Any, filters: Filters) -> pd.DataFrame:
    """Priced vendor_usage figures in the filter's UTC days. A filter on user or model applies to
    them; one on agent, provider, source, project or repo cannot, so no vendor figure is used then."""
    from sqlalchemy import func, select

    from loopmeter.store import models

    if any(getattr(filters, dim) for dim in ("agent", "provider", "source", "project", "repo")):
        return pd.DataFrame(columns=FIGURE_COLUMNS)
    t = models.VendorUsage.__table__  # type: ignore[attr-defined]
    user = person(t)
    stmt = in_scope(
        select(t.c.date, t.c.vendor, t.c.tier, t.c.model, user.label("user"), func.sum(t.c.cost_usd), t.c.report)
        .where(t.c.cost_usd.is_not(None)).group_by(t.c.date, t.c.vendor, t.c.tier, t.c.model, user, t.c.report),
        t, filters)
    scopes = report_scopes()
    with store.engine.connect() as conn:
        rows = [(*r[:6], scopes.get((r[1], r[6]))) for r in conn.execute(stmt)]
    return pd.DataFrame(rows, columns=FIGURE_COLUMNS).astype({"cost_usd": float})


def report_scopes() -> dict[tuple[str, str], str]:
    """(vendor, report) -> the agent whose calls the report covers, for the reports that say one."""
    from loopmeter.vendors.base import connectors

    return {(c.name, r.name): r.agent for c in connectors().values() for r in c.reports if r.agent}


def decide(figures: pd.DataFrame) -> pd.DataFrame:
    """THE tier rule. `figures`: rows (date, vendor, tier, cost_usd[, scope]) from any source. One row
    per (date, vendor): `cost_usd` from the best tier present and `tier` naming it, beside each tier's
    own sum. Billed replaces everything measured that day; a vendor figure replaces the measured calls
    of its scope (all of them when it has none), the vendor's other measured calls are added to it;
    measured alone reads "calculated" when any of it was calculated, else "reported"."""
    if not len(figures):
        return pd.DataFrame(columns=DECIDED_COLUMNS)
    frame = figures if "scope" in figures.columns else figures.assign(scope=None)
    frame = frame[frame["cost_usd"].notna()]
    out = []
    for (day, vendor), group in frame.groupby(["date", "vendor"], sort=True):
        by_tier = {t.value: group.loc[group["tier"] == t.value, "cost_usd"] for t in Tier}
        sums = {t: (float(v.sum()) if len(v) else None) for t, v in by_tier.items()}
        measured_rows = group[group["tier"].isin([Tier.REPORTED.value, Tier.CALCULATED.value])]
        measured = float(measured_rows["cost_usd"].sum()) if len(measured_rows) else None
        if sums[Tier.BILLED] is not None:
            tier, cost = Tier.BILLED.value, sums[Tier.BILLED]
        elif (vendor_sum := sums[Tier.VENDOR]) is not None:
            scopes = set(group.loc[group["tier"] == Tier.VENDOR.value, "scope"])
            covered = any(s is None or pd.isna(s) for s in scopes)
            outside = measured_rows.loc[~measured_rows["scope"].isin(scopes), "cost_usd"] if not covered else []
            tier, cost = Tier.VENDOR.value, vendor_sum + float(sum(outside))
        elif measured is not None:
            tier = Tier.CALCULATED.value if sums[Tier.CALCULATED] is not None else Tier.REPORTED.value
            cost = measured
        else:
            continue
        out.append({"date": day, "vendor": vendor, "tier": tier, "cost_usd": cost,
                    "billed_usd": sums[Tier.BILLED], "vendor_usd": sums[Tier.VENDOR], "measured_usd": measured,
                    "reported_usd": sums[Tier.REPORTED], "calculated_usd": sums[Tier.CALCULATED]})
    return pd.DataFrame(out, columns=DECIDED_COLUMNS)


def summary(decided: pd.DataFrame) -> dict[str, Any]:
    """Total spend under the rule, how much of it each tier gave, and the days each vendor figure won."""
    if not len(decided):
        return {"cost_usd": None, "by_tier": {}, "by_vendor": {}, "vendor_days": 0, "tier": None}
    priced = decided[decided["cost_usd"].notna()]
    by_tier = priced.groupby("tier")["cost_usd"].sum()
    by_vendor = priced.groupby("vendor")["cost_usd"].sum()
    tiers = [t.value for t in Tier if t.value in by_tier.index]
    return {
        "cost_usd": round(float(priced["cost_usd"].sum()), 6) if len(priced) else None,
        "by_tier": {t: round(float(by_tier[t]), 6) for t in tiers},
        "by_vendor": {str(v): round(float(c), 6) for v, c in sorted(by_vendor.items())},
        "vendor_days": int(priced["tier"].isin([Tier.BILLED.value, Tier.VENDOR.value]).sum()),
        "tier": tiers[-1] if tiers else None,  # the weakest tier anything in the total came from
    }


def spend(cube: pd.DataFrame, vendor: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Decided rows and their summary from the usage cube and the vendor figures."""
    frames = [f for f in (measured_figures(cube), vendor) if f is not None and len(f)]
    decided = decide(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FIGURE_COLUMNS))
    return decided, summary(decided)


def reconcile(cube: pd.DataFrame, vendor: pd.DataFrame, threshold_pct: float = 10.0) -> dict[str, Any]:
    """Billed against measured per UTC day and vendor (for the days each vendor's bill covers), and
    per model where both sides name it. drift = billed - measured; drift_pct = drift / billed x 100;
    `over_threshold` when |drift_pct| > threshold, or when only one side has a figure that day."""
    measured = measured_figures(cube)
    billed = vendor[vendor["tier"] == Tier.BILLED.value] if len(vendor) else pd.DataFrame(columns=FIGURE_COLUMNS)
    if not len(billed):
        return {"threshold_pct": threshold_pct, "rows": [], "models": []}
    covered = billed.groupby("vendor")["date"].agg(["min", "max"])
    rows = [r for r in _drift(billed, measured, ["date", "vendor"], threshold_pct, both=False)
            if r["vendor"] in covered.index and covered.loc[r["vendor"], "min"] <= r["date"] <= covered.loc[r["vendor"], "max"]]
    models = _drift(billed[billed["model"].notna()], measured[measured["model"].notna()],
                    ["date", "vendor", "model"], threshold_pct, both=True)
    return {"threshold_pct": threshold_pct, "rows": rows, "models": models}


def _drift(billed: pd.DataFrame, measured: pd.DataFrame, keys: list[str], threshold_pct: float,
           both: bool) -> list[dict[str, Any]]:
    b = billed.groupby(keys)["cost_usd"].sum() if len(billed) else pd.Series(dtype=float)
    m = measured.groupby(keys)["cost_usd"].sum() if len(measured) else pd.Series(dtype=float)
    index = b.index.intersection(m.index) if both else b.index.union(m.index)
    rows = []
    for k in sorted(index, key=lambda x: tuple(str(p) for p in (x if isinstance(x, tuple) else (x,)))):
        bv = float(b[k]) if k in b.index else None
        mv = float(m[k]) if k in m.index else None
        drift = None if bv is None or mv is None else bv - mv
        pct = drift / bv * 100 if drift is not None and bv else None
        over = (bv is None) != (mv is None) or (pct is not None and abs(pct) > threshold_pct)
        names = dict(zip(keys, k if isinstance(k, tuple) else (k,), strict=True))
        rows.append({**names, "billed_usd": _r(bv), "measured_usd": _r(mv), "drift_usd": _r(drift),
                     "drift_pct": None if pct is None else round(pct, 2), "over_threshold": bool(over)})
    return rows


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
