"""Vendor figures for people: `loopmeter vendors spend` and `vendors status` rows, and the
billing-cycle checks (the dashboard's Vendors view and the reports read the same functions). The tier rule itself is analytics/tiers.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

SPEND_FIELDS = ("date", "vendor", "user", "model", "tier", "cost_usd", "credits", "input_tokens", "output_tokens",
                "cache_read_tokens", "cache_write_tokens")
_SUMMED = SPEND_FIELDS[5:]


def spend_rows(store: Any, people: Mapping[str, str], since: str | None = None, until: str | None = None,
               vendors: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Vendor figures per UTC day, vendor, person, model and tier (the `vendors spend --json` rows).
    The person is [people]'s name for the vendor's user as configured now, else the vendor's identity.
    A figure the vendor did not give stays None (never 0); rows with no figure at all are left out."""
    from loopmeter.store import vendors as vstore
    from loopmeter.vendors.base import person

    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in vstore.rows(store, since, until, vendors):
        if all(r[f] is None for f in _SUMMED):
            continue  # an activity row (sessions, commits): no spend figure
        user = person(people, r["vendor_user"]) if r["vendor_user"] else r["user"]
        key = (r["date"], r["vendor"], user, r["model"], r["tier"])
        row = out.get(key)
        if row is None:
            out[key] = {**dict(zip(SPEND_FIELDS[:5], key, strict=True)), **{f: r[f] for f in _SUMMED}}
            continue
        for f in _SUMMED:
            if r[f] is not None:
                row[f] = r[f] if row[f] is None else row[f] + r[f]
    rows = sorted(out.values(), key=lambda x: tuple("" if x[f] is None else str(x[f]) for f in SPEND_FIELDS[:5]))
    for row in rows:
        for f in ("cost_usd", "credits"):
            if row[f] is not None:
                row[f] = round(row[f], 6)
    return rows


def status_rows(store: Any, env: Mapping[str, str] | None = None, today: date | None = None) -> list[dict[str, Any]]:
    """Per vendor and report: whether a key is set (and where), last sync, rows, newest day stored,
    data lag in days, last error."""
    from datetime import UTC

    from loopmeter.secrets import get_key
    from loopmeter.store import vendors as vstore
    from loopmeter.vendors.base import connectors

    today = today or datetime.now(UTC).date()
    found = connectors()
    cursors = {(c.source, c.scope): c for c in vstore.cursors(store, list(found))}
    latest = vstore.latest_dates(store)
    rows = []
    for name, conn in found.items():
        _, where = get_key(conn.key_name, env)
        for report in conn.reports:
            c = cursors.get((name, report.name))
            newest = latest.get((name, report.name))
            rows.append({
                "vendor": name, "report": report.name, "key": conn.key_name, "env_var": conn.env_var,
                "key_from": None if where == "none" else where,
                "synced_at": c.synced_at.isoformat() if c and c.synced_at else None,
                "rows": c.rows if c else 0, "newest_day": newest,
                "lag_days": (today - date.fromisoformat(newest)).days if newest else None,
                "last_error": c.last_error if c else None,
                "last_error_at": c.last_error_at.isoformat() if c and c.last_error_at else None,
            })
    return rows


def cycle_checks(store: Any) -> list[dict[str, Any]]:
    """What a vendor says about its billing cycle so far, beside what the store holds for it: Cursor's
    /teams/spend total against the stored Σ chargedCents since the cycle start; Windsurf's
    promptCreditsUsed (its cycle start is not given, so nothing stored is set beside it). The
    connectors keep these in their sync cursors; they are checks, never added to any day."""
    import json

    from sqlalchemy import func, select

    from loopmeter.store import models
    from loopmeter.store import vendors as vstore

    out: list[dict[str, Any]] = []
    for cursor in vstore.cursors(store, ["cursor", "windsurf"]):
        try:
            state = json.loads(cursor.cursor or "{}")
        except ValueError:
            continue
        if not isinstance(state, dict):
            continue
        if cursor.source == "cursor" and isinstance(state.get("cycle_spend_usd"), int | float):
            since = state.get("cycle_start") if isinstance(state.get("cycle_start"), str) else None
            t = models.VendorUsage.__table__  # type: ignore[attr-defined]
            stmt = select(func.sum(t.c.cost_usd)).where(t.c.vendor == "cursor",
                                                        t.c.report == "filtered-usage-events")
            if since:
                stmt = stmt.where(t.c.date >= since)
            with store.engine.connect() as conn:
                stored = conn.execute(stmt).scalar()
            out.append({"vendor": "cursor", "check": "billing cycle spend (/teams/spend)", "since": since,
                        "unit": "usd", "vendor_says": float(state["cycle_spend_usd"]),
                        "stored": None if stored is None else round(float(stored), 6)})
        elif cursor.source == "windsurf" and isinstance(state.get("cycle_credits"), int | float):
            out.append({"vendor": "windsurf", "check": "billing cycle credits (UserPageAnalytics)", "since": None,
                        "unit": "credits", "vendor_says": float(state["cycle_credits"]), "stored": None})
    return sorted(out, key=lambda c: c["vendor"])
