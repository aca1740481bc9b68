"""Helpers for the Cursor, Windsurf and Copilot connector tests: a sync against a scripted server
and the stored figures summed, read back from the store as any face reads them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopmeter.config import Settings

NOW = datetime(2026, 11, 5, 15, 0, tzinfo=UTC)  # the scripted teams' data runs 2026-11-01 ..


def settings(home: Path, vendors: dict[str, dict[str, Any]] | None = None,
             people: dict[str, str] | None = None) -> Settings:
    return Settings(home=home, vendors=vendors or {}, people=people or {})


def run_sync(store: Any, home: Path, vendor: str, url: str, env: dict[str, str], *, now: datetime = NOW,
             vendors: dict[str, dict[str, Any]] | None = None, people: dict[str, str] | None = None) -> list[Any]:
    from loopmeter.vendors.base import sync

    return sync(store, settings(home, vendors, people), [vendor], api_url_override=url, now=now, env=env)


def stored(store: Any, vendor: str, report: str | None = None) -> list[dict[str, Any]]:
    from loopmeter.store import vendors as vstore

    return [r for r in vstore.rows(store, vendors=[vendor]) if report is None or r["report"] == report]


def total(rows: list[dict[str, Any]], field: str) -> float:
    return sum(r[field] or 0 for r in rows)


def extra_total(rows: list[dict[str, Any]], field: str) -> float:
    return sum((json.loads(r["extra"]) if r["extra"] else {}).get(field) or 0 for r in rows)


def cursor_state(store: Any, vendor: str, report: str) -> dict[str, Any]:
    from loopmeter.store import vendors as vstore

    row = vstore.get_cursor(store, vendor, report)
    assert row is not None
    return json.loads(row.cursor) if row.cursor else {}


def everything_stored(store: Any) -> str:
    """Every vendor_usage and sync_cursor value as text: where a leaked key would show."""
    with store.engine.connect() as conn:
        from sqlalchemy import text

        out = []
        for table in ("vendor_usage", "sync_cursor"):
            out += [repr(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(out)


def sync_three(store: Any, home: Path, now: datetime, *, days: int = 5, users: int = 3,
               vendors: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Cursor, Windsurf and Copilot synced from their scripted servers, with data on the `days`
    UTC days up to `now`'s; the servers' totals by vendor (for the faces' tests)."""
    from datetime import timedelta

    from tests.servers.copilot_server import CopilotServer
    from tests.servers.cursor_admin_server import CursorAdminServer
    from tests.servers.windsurf_server import WindsurfServer

    start = now.date() - timedelta(days=days - 1)
    options = {"copilot": {"org": "acme"}, **(vendors or {})}
    totals: dict[str, dict[str, Any]] = {}
    with CursorAdminServer(users=users, days=days, start=start) as cursor, \
            WindsurfServer(users=users, days=days, start=start) as windsurf, \
            CopilotServer(org="acme", users=users, days=days, start=start) as copilot:
        for name, srv, env in (("cursor", cursor, {"CURSOR_ADMIN_API_KEY": cursor.key}),
                               ("windsurf", windsurf, {"WINDSURF_SERVICE_KEY": windsurf.key}),
                               ("copilot", copilot, {"GITHUB_TOKEN": copilot.token})):
            results = run_sync(store, home, name, srv.url, env, now=now, vendors=options)
            assert all(r.error is None for r in results), results
            totals[name] = srv.totals()
    return totals
