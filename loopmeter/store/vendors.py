"""The store's side of vendor sync: vendor_usage rows (replaced, never added twice) and sync cursors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, select

from loopmeter.store import models

BATCH = 2000


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert


def replace_rows(store: Any, vendor: str, report: str, rows: Sequence[dict[str, Any]],
                 window: tuple[str, str] | None) -> int:
    """Write one report's rows in one transaction: with a window (first, last day), what the report
    stored on those days goes first; then each row replaces the one with its key. Returns len(rows)."""
    table = models.VendorUsage.__table__  # type: ignore[attr-defined]
    cols = [c.name for c in table.columns if c.name != "id"]
    with store.engine.begin() as conn:
        if window is not None:
            conn.execute(delete(table).where(and_(table.c.vendor == vendor, table.c.report == report,
                                                  table.c.date >= window[0], table.c.date <= window[1])))
        for i in range(0, len(rows), BATCH):
            batch = [{c: r.get(c) for c in cols} for r in rows[i:i + BATCH]]
            stmt = _insert(store.dialect)(table)
            stmt = stmt.on_conflict_do_update(index_elements=["key"],
                                              set_={c: stmt.excluded[c] for c in cols if c != "key"})
            conn.execute(stmt, batch)
    return len(rows)


def get_cursor(store: Any, source: str, scope: str) -> models.SyncCursor | None:
    with store.session() as session:
        return session.get(models.SyncCursor, (source, scope))


def save_cursor(store: Any, source: str, scope: str, *, now: datetime, cursor: dict[str, Any] | None = None,
                synced_at: datetime | None = None, rows: int | None = None, error: str | None = None) -> None:
    """Record a sync: on success (synced_at set) the new cursor, rows and no error; on failure only
    the error and when, keeping the cursor of the last good sync."""
    import json

    with store.session() as session:
        row = session.get(models.SyncCursor, (source, scope)) or models.SyncCursor(source=source, scope=scope)
        if synced_at is not None:
            row.synced_at = synced_at
            row.cursor = json.dumps(cursor or {}, sort_keys=True)
            row.rows = rows or 0
            row.last_error = None
            row.last_error_at = None
        else:
            row.last_error = error
            row.last_error_at = now
        session.add(row)
        session.commit()


def cursors(store: Any, sources: Sequence[str]) -> list[models.SyncCursor]:
    from sqlmodel import col
    from sqlmodel import select as model_select

    with store.session() as session:
        return list(session.exec(model_select(models.SyncCursor).where(col(models.SyncCursor.source).in_(sources))))


def rows(store: Any, since: str | None = None, until: str | None = None,
         vendors: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """vendor_usage rows (dicts) with since <= date <= until, by date, vendor, report, key."""
    table = models.VendorUsage.__table__  # type: ignore[attr-defined]
    stmt = select(table)
    if since:
        stmt = stmt.where(table.c.date >= since)
    if until:
        stmt = stmt.where(table.c.date <= until)
    if vendors:
        stmt = stmt.where(table.c.vendor.in_(list(vendors)))
    stmt = stmt.order_by(table.c.date, table.c.vendor, table.c.report, table.c.key)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def latest_dates(store: Any) -> dict[tuple[str, str], str]:
    """The newest day stored per (vendor, report): what `vendors status` calls the data lag."""
    from sqlalchemy import func

    table = models.VendorUsage.__table__  # type: ignore[attr-defined]
    stmt = select(table.c.vendor, table.c.report, func.max(table.c.date)).group_by(table.c.vendor, table.c.report)
    with store.engine.connect() as conn:
        return {(v, r): d for v, r, d in conn.execute(stmt)}
