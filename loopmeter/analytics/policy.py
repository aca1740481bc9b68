"""Audit records for the Policy tab and report, and the chain status from `verify_chain`.

No pandas at import: `python -m loopmeter.analytics.policy URL` is the child that verifies the chain.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from loopmeter.analytics.filters import Filters, to_utc
from loopmeter.store import Store
from loopmeter.store.models import Audit

_AU: Any = Audit.__table__.c  # type: ignore[attr-defined]  # typed columns for SQL

COLUMNS = ["seq", "ts", "run_id", "actor", "layer", "action", "target", "decision", "rule_id"]


def _conditions(filters: Filters, decision: str | None, layer: str | None, run_id: str | None,
                *, scan_ts: bool = False) -> list[Any]:
    where: list[Any] = []
    since, until = to_utc(filters.since), to_utc(filters.until)
    # newest-first pages walk the seq order; coalesce() keeps SQLite off the ts index, whose
    # random lookups cost more than reading the table in order when the range is wide
    ts = func.coalesce(_AU.ts, _AU.ts) if scan_ts else _AU.ts
    if since is not None:
        where.append(ts >= since)
    if until is not None:
        where.append(ts < until)
    if decision:
        where.append(_AU.decision == decision)
    if layer:
        where.append(_AU.layer == layer)
    if run_id:
        where.append(_AU.run_id == run_id)
    return where


def audit_records(store: Store, filters: Filters, *, decision: str | None = None, layer: str | None = None,
                  run_id: str | None = None, limit: int = 500) -> Any:
    """Newest first, as a pandas DataFrame."""
    import pandas as pd

    where = _conditions(filters, decision, layer, run_id, scan_ts=True)
    stmt = (select(*[getattr(Audit, c) for c in COLUMNS]).where(*where)
            .order_by(_AU.seq.desc()).limit(limit))
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS)


def decision_counts(store: Store, filters: Filters, *, layer: str | None = None,
                    run_id: str | None = None) -> dict[str, int]:
    with store.engine.connect() as conn:
        if _covers_every_record(conn, filters):  # then the decision index alone answers
            filters = filters.replace(since=None, until=None)
        where = _conditions(filters, None, layer, run_id)
        stmt = select(_AU.decision, func.count()).where(*where).group_by(_AU.decision)
        return {d: int(n) for d, n in conn.execute(stmt)}


def _covers_every_record(conn: Any, filters: Filters) -> bool:
    """Whether [since, until) holds the oldest and newest record (two index lookups): a time check
    per row then changes nothing, and counting 100k records by ts index lookups took ~27 ms."""
    since, until = to_utc(filters.since), to_utc(filters.until)
    if since is None and until is None:
        return False
    oldest, newest = conn.execute(select(select(func.min(_AU.ts)).scalar_subquery(),
                                         select(func.max(_AU.ts)).scalar_subquery())).one()
    first, last = to_utc(oldest), to_utc(newest)
    if first is None or last is None:
        return False
    return (since is None or since <= first) and (until is None or last < until)


def start_chain_check(store: Store | str, *, nice: int = 0) -> Any:
    """Begin chain_status in a child process (see loopmeter.analytics.chain_check)."""
    from loopmeter.analytics import chain_check

    url = store if isinstance(store, str) else store.engine.url.render_as_string(hide_password=False)
    return chain_check.start(url, nice=nice)


def finish_chain_check(proc: Any, timeout_s: float = 600) -> dict[str, Any]:
    from loopmeter.analytics import chain_check

    return chain_check.finish(proc, timeout_s)


def chain_status_isolated(store: Store, timeout_s: float = 600, *, nice: int = 0) -> dict[str, Any]:
    return finish_chain_check(start_chain_check(store, nice=nice), timeout_s)


def chain_status(store: Store) -> dict[str, Any]:
    """{"status": "ok" | "broken" | "unavailable", "detail", "records", "seconds"} from verify_chain."""
    try:
        from loopmeter.policies.audit import verify_chain
    except ImportError:
        return {"status": "unavailable", "detail": "audit verification is not installed in this build",
                "records": None, "seconds": None}
    t0 = time.perf_counter()
    try:
        result = verify_chain(store)
    except Exception as exc:  # noqa: BLE001 - the dashboard reports it, it does not crash
        return {"status": "unavailable", "detail": f"verify failed: {exc}", "records": None,
                "seconds": time.perf_counter() - t0}
    return {**_normalise(result), "seconds": round(time.perf_counter() - t0, 3)}


def _normalise(result: Any) -> dict[str, Any]:
    """verify_chain's result as a dict, whether it returns a dataclass, a dict, or a bool."""
    if isinstance(result, bool):
        return {"status": "ok" if result else "broken", "detail": None, "records": None}
    data = result if isinstance(result, dict) else getattr(result, "__dict__", {})
    ok = data.get("ok", data.get("valid"))
    status = "ok" if ok else "broken" if ok is not None else str(data.get("status", "unknown"))
    detail = data.get("detail") or data.get("reason") or data.get("message") or data.get("error")
    first_bad = data.get("first_bad_seq", data.get("broken_at", data.get("bad_seq")))
    if first_bad is not None and status == "broken":
        detail = f"first bad record: seq {first_bad}" + (f" ({detail})" if detail else "")
    records = data.get("records", data.get("checked", data.get("count")))
    return {"status": status, "detail": detail, "records": records}
