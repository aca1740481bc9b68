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

Vendor APIs bucket by UTC day, so these days are UTC days whatever the display zone. Figures
are plain rows (`Figure`), read in SQL through `analytics/sums.py`'s `Db`, so the dashboard's
first figure needs neither pandas nor SQLAlchemy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from loopmeter.analytics.filters import Filters
from loopmeter.vocab import Tier

if TYPE_CHECKING:
    from loopmeter.analytics.sums import Db

# the tool vendor that bills a call, by agent (a Cursor call to a Claude model is Cursor's)
AGENT_VENDORS = {"cursor": "cursor", "cursor-agent": "cursor", "windsurf": "windsurf", "copilot": "copilot",
                 "github-copilot": "copilot"}
# else by the model provider
PROVIDER_VENDORS = {"anthropic": "anthropic", "openai": "openai", "gemini": "google", "vertex_ai": "google",
                    "google": "google"}
MEASURED = (Tier.REPORTED.value, Tier.CALCULATED.value)
DECIDED_COLUMNS = ["date", "vendor", "tier", "cost_usd", "billed_usd", "vendor_usd", "measured_usd",
                   "reported_usd", "calculated_usd"]
# a filter on one of these cannot apply to vendor figures, which carry none of them
NOT_IN_VENDOR_FIGURES = ("agent", "provider", "source", "project", "repo")


class Figure(NamedTuple):
    """A spend figure for one UTC day and vendor at one tier. `scope`: for a measured figure its
    agent; for a vendor figure the agent its report covers (None: every call of the vendor)."""

    date: str
    vendor: str
    tier: str
    model: str | None
    user: str | None
    cost_usd: float
    scope: str | None = None


def vendor_of(agent: Any, provider: Any) -> str:
    """Which vendor a locally measured call is paid to. Unknown dimensions may arrive as None
    or as NaN (a frame's missing value)."""
    if isinstance(agent, str) and agent.lower() in AGENT_VENDORS:
        return AGENT_VENDORS[agent.lower()]
    if isinstance(provider, str) and provider:
        return PROVIDER_VENDORS.get(provider.lower(), provider.lower())
    return "(unknown)"


def measured_figures(day_sums: Iterable[Sequence[Any]]) -> list[Figure]:
    """The priced usage sums (`sums.day_sums` rows: UTC day, agent, provider, cost source, model,
    user, *measures) as figures per UTC day, vendor, tier (the cost source), model, user and agent."""
    totals: dict[tuple[Any, ...], float] = {}
    for day, agent, provider, cost_source, model, user, _calls, _unpriced, cost, *_tokens in day_sums:
        if cost_source in MEASURED:
            key = (day, vendor_of(agent, provider), cost_source, model, user, agent)
            totals[key] = totals.get(key, 0.0) + cost
    return [Figure(d, v, t, m, u, c, a) for (d, v, t, m, u, a), c in sorted(totals.items(), key=_sort_key)]


def utc_days(filters: Filters) -> tuple[str | None, str | None]:
    """The UTC days a filter's range touches (a vendor day counts whole)."""
    since = filters.since.astimezone(UTC).date().isoformat() if filters.since else None
    until = (filters.until.astimezone(UTC) - timedelta(microseconds=1)).date().isoformat() if filters.until else None
    return since, until


PERSON = 'coalesce("user", vendor_user)'  # a vendor_usage row's person: the mapped loopmeter user, else the vendor's


def scope_where(filters: Filters) -> tuple[str, dict[str, Any]]:
    """SQL conditions narrowing vendor_usage to the filter's UTC days, person and model."""
    since, until = utc_days(filters)
    clauses, params = ["1=1"], {}
    for op, name, value in ((">=", "since", since), ("<=", "until", until)):
        if value:
            clauses.append(f"date {op} :{name}")
            params[name] = value
    if filters.user:
        clauses.append(f"{PERSON} = :person")
        params["person"] = filters.user
    if filters.model:
        clauses.append("model = :model")
        params["model"] = filters.model
    return " AND ".join(clauses), params


def vendor_figures(db: Db, filters: Filters) -> list[Figure]:
    """Priced vendor_usage figures in the filter's UTC days. A filter on user or model applies to
    them; one on agent, provider, source, project or repo cannot, so no vendor figure is used then."""
    if any(getattr(filters, dim) for dim in NOT_IN_VENDOR_FIGURES):
        return []
    where, params = scope_where(filters)
    sql = (f"SELECT date, vendor, tier, model, {PERSON}, sum(cost_usd), report FROM vendor_usage "
           f"WHERE cost_usd IS NOT NULL AND {where} GROUP BY date, vendor, tier, model, {PERSON}, report")
    scopes = report_scopes()
    rows = [Figure(str(d), v, t, m, u, float(c), scopes.get((v, r))) for d, v, t, m, u, c, r in db.rows(sql, params)]
    return sorted(rows, key=_sort_key)


def report_scopes() -> dict[tuple[str, str], str]:
    """(vendor, report) -> the agent whose calls the report covers, for the reports that say one."""
    from loopmeter.vendors.base import connectors

    return {(c.name, r.name): r.agent for c in connectors().values() for r in c.reports if r.agent}


def _sort_key(item: Any) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in (item[0] if isinstance(item[0], tuple) else item))


def _known(value: Any) -> Any:
    """None for a frame's missing value (NaN), else the value."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def decide(figures: Iterable[Figure]) -> list[dict[str, Any]]:
    """THE tier rule. `figures`: measured and vendor figures from any source. One row per (date, vendor), by date then vendor: `cost_usd` from the best tier present and
    `tier` naming it, beside each tier's own sum. Billed replaces everything measured that day; a
    vendor figure replaces the measured calls of its scope (all of them when it has none), the
    vendor's other measured calls are added to it; measured alone reads "calculated" when any of it
    was calculated, else "reported"."""
    groups: dict[tuple[str, str], list[Figure]] = {}
    for f in figures:
        if _known(f.cost_usd) is not None:
            groups.setdefault((f.date, f.vendor), []).append(f._replace(scope=_known(f.scope)))
    out = []
    for (day, vendor), group in sorted(groups.items()):
        sums: dict[str, float | None] = {t.value: None for t in Tier}
        for f in group:
            if f.tier in sums:
                sums[f.tier] = (sums[f.tier] or 0.0) + f.cost_usd
        measured_rows = [f for f in group if f.tier in MEASURED]
        measured = sum(f.cost_usd for f in measured_rows) if measured_rows else None
        if (billed := sums[Tier.BILLED]) is not None:
            tier, cost = Tier.BILLED.value, billed
        elif (vendor_sum := sums[Tier.VENDOR]) is not None:
            scopes = {f.scope for f in group if f.tier == Tier.VENDOR}
            outside = [] if None in scopes else [f.cost_usd for f in measured_rows if f.scope not in scopes]
            tier, cost = Tier.VENDOR.value, vendor_sum + sum(outside)
        elif measured is not None:
            tier = Tier.CALCULATED.value if sums[Tier.CALCULATED] is not None else Tier.REPORTED.value
            cost = measured
        else:
            continue
        out.append({"date": day, "vendor": vendor, "tier": tier, "cost_usd": cost,
                    "billed_usd": sums[Tier.BILLED], "vendor_usd": sums[Tier.VENDOR], "measured_usd": measured,
                    "reported_usd": sums[Tier.REPORTED], "calculated_usd": sums[Tier.CALCULATED]})
    return out


def summary(decided: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Total spend under the rule, how much of it each tier gave, and the days each vendor figure won."""
    priced = [d for d in decided if _known(d["cost_usd"]) is not None]
    if not priced:
        return {"cost_usd": None, "by_tier": {}, "by_vendor": {}, "vendor_days": 0, "tier": None}
    by_tier: dict[str, float] = {}
    by_vendor: dict[str, float] = {}
    for d in priced:
        by_tier[d["tier"]] = by_tier.get(d["tier"], 0.0) + d["cost_usd"]
        by_vendor[str(d["vendor"])] = by_vendor.get(str(d["vendor"]), 0.0) + d["cost_usd"]
    tiers = [t.value for t in Tier if t.value in by_tier]
    return {
        "cost_usd": round(sum(d["cost_usd"] for d in priced), 6),
        "by_tier": {t: round(by_tier[t], 6) for t in tiers},
        "by_vendor": {v: round(c, 6) for v, c in sorted(by_vendor.items())},
        "vendor_days": sum(1 for d in priced if d["tier"] in (Tier.BILLED.value, Tier.VENDOR.value)),
        "tier": tiers[-1] if tiers else None,  # the weakest tier anything in the total came from
    }


def spend(measured: Iterable[Figure], vendor: Iterable[Figure]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Decided rows and their summary from measured and vendor figures."""
    decided = decide([*measured, *vendor])
    return decided, summary(decided)


def reconcile(measured: Sequence[Figure], vendor: Sequence[Figure], threshold_pct: float = 10.0) -> dict[str, Any]:
    """Billed against measured per UTC day and vendor (for the days each vendor's bill covers), and
    per model where both sides name it. drift = billed - measured; drift_pct = drift / billed x 100;
    `over_threshold` when |drift_pct| > threshold, or when only one side has a figure that day."""
    billed = [f for f in vendor if f.tier == Tier.BILLED]
    if not billed:
        return {"threshold_pct": threshold_pct, "rows": [], "models": []}
    covered: dict[str, tuple[str, str]] = {}
    for f in billed:
        lo, hi = covered.get(f.vendor, (f.date, f.date))
        covered[f.vendor] = (min(lo, f.date), max(hi, f.date))
    rows = [r for r in _drift(billed, measured, ("date", "vendor"), threshold_pct, both=False)
            if r["vendor"] in covered and covered[r["vendor"]][0] <= r["date"] <= covered[r["vendor"]][1]]
    models = _drift([f for f in billed if f.model is not None], [f for f in measured if f.model is not None],
                    ("date", "vendor", "model"), threshold_pct, both=True)
    return {"threshold_pct": threshold_pct, "rows": rows, "models": models}


def _drift(billed: Sequence[Figure], measured: Sequence[Figure], keys: tuple[str, ...], threshold_pct: float,
           both: bool) -> list[dict[str, Any]]:
    def sums(figures: Sequence[Figure]) -> dict[tuple[Any, ...], float]:
        out: dict[tuple[Any, ...], float] = {}
        for f in figures:
            k = tuple(getattr(f, key) for key in keys)
            out[k] = out.get(k, 0.0) + f.cost_usd
        return out

    b, m = sums(billed), sums(measured)
    index = (b.keys() & m.keys()) if both else (b.keys() | m.keys())
    rows = []
    for k in sorted(index, key=lambda x: tuple(str(p) for p in x)):
        bv, mv = b.get(k), m.get(k)
        drift = None if bv is None or mv is None else bv - mv
        pct = drift / bv * 100 if drift is not None and bv else None
        over = (bv is None) != (mv is None) or (pct is not None and abs(pct) > threshold_pct)
        rows.append({**dict(zip(keys, k, strict=True)), "billed_usd": _r(bv), "measured_usd": _r(mv),
                     "drift_usd": _r(drift), "drift_pct": None if pct is None else round(pct, 2),
                     "over_threshold": bool(over)})
    return rows


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
