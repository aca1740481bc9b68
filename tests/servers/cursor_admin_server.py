"""A scripted Cursor Admin API on 127.0.0.1 (shapes and units of cursor.com/docs/account/teams/admin-api,
see /work/shared/formats/VENDOR_APIS.md A3).

    with CursorAdminServer(users=3, days=5) as srv:      # a generated team, deterministic
        base_url = srv.url                                # HTTP Basic: key as user, empty password
        srv.totals()                                      # what a full sync must store
        srv.fail_next(429, retry_after="1")               # scripted faults (tests/servers/_admin_faults.py)

Endpoints (all POST, JSON bodies):
- `/teams/filtered-usage-events` {startDate, endDate (epoch ms, both inclusive), page, pageSize<=1000}:
  `{totalUsageEventsCount, pagination:{numPages,currentPage,pageSize,hasNextPage,hasPreviousPage},
  usageEvents:[…], period}`. `timestamp` is epoch ms AS A STRING; `chargedCents` is fractional
  cents, sent as a number or (every third event) as a string; `tokenUsage` is absent on calls
  that are not token based.
- `/teams/daily-usage-data` {startDate, endDate (<= 30 days), page, pageSize}: one row per user
  and day; pages over users (`pagination.totalUsers`).
- `/teams/spend` {page, pageSize}: `teamMemberSpend` for the cycle that starts at
  `cycle_start` (default: the first generated day), cents fractional.
A wrong key gets 401; a bad body 400. `page_cap` makes every endpoint page after that many
items (users for daily-usage-data), as a server that caps pageSize does.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from tests.servers._admin_faults import Faults, page_of
from tests.servers._http import QuietHandler, ScriptedServer

DAY_MS = 86_400_000
MODELS = ["claude-4.5-sonnet", "gpt-5", "auto", "claude-4.1-opus"]


def day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


@dataclass
class CursorTeam:
    """Generated usage: events per user and day, and the daily activity rows."""

    users: int = 3
    days: int = 5
    start: date = date(2026, 11, 1)
    events_per_day: int = 3
    seed: int = 7
    events: list[dict[str, Any]] = field(default_factory=list)
    daily: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        n = 0
        for u in range(self.users):
            email = f"dev{u:03d}@example.com"
            for d in range(self.days):
                day = self.start + timedelta(days=d)
                for _ in range(self.events_per_day):
                    self.events.append(self._event(rng, n, email, day))
                    n += 1
                self.daily.append(self._daily(rng, u, email, day))
        self.events.sort(key=lambda e: int(e["timestamp"]))

    @staticmethod
    def _event(rng: random.Random, n: int, email: str, day: date) -> dict[str, Any]:
        ts = day_ms(day) + rng.randrange(DAY_MS)
        usage_based = n % 2 == 0
        cents = round(rng.uniform(0.5, 90.0), 4) if usage_based else 0
        event: dict[str, Any] = {
            "timestamp": str(ts),
            "userEmail": email,
            "model": MODELS[n % len(MODELS)],
            "kind": "Usage-based" if usage_based else "Included in Business",
            "maxMode": n % 5 == 0,
            "requestsCosts": rng.choice([0.5, 1, 2]),
            "isTokenBasedCall": n % 7 != 3,
            "isChargeable": usage_based,
            "isHeadless": False,
            "chargedCents": str(cents) if n % 3 == 0 else cents,
        }
        if event["isTokenBasedCall"]:
            event["tokenUsage"] = {
                "inputTokens": rng.randrange(1_000, 90_000),
                "outputTokens": rng.randrange(100, 8_000),
                "cacheWriteTokens": rng.randrange(0, 20_000),
                "cacheReadTokens": rng.randrange(0, 200_000),
                "totalCents": round(rng.uniform(0.5, 90.0), 4),
            }
        return event

    @staticmethod
    def _daily(rng: random.Random, u: int, email: str, day: date) -> dict[str, Any]:
        return {
            "userId": f"user_{u:05d}",
            "day": day.isoformat(),
            "date": day_ms(day),
            "email": email,
            "isActive": True,
            "acceptedLinesAdded": rng.randrange(0, 400),
            "acceptedLinesDeleted": rng.randrange(0, 100),
            "totalTabsShown": rng.randrange(0, 300),
            "totalTabsAccepted": rng.randrange(0, 100),
            "composerRequests": rng.randrange(0, 20),
            "chatRequests": rng.randrange(0, 20),
            "agentRequests": rng.randrange(0, 30),
            "usageBasedReqs": rng.randrange(0, 10),
            "mostUsedModel": MODELS[u % len(MODELS)],
        }


def _in_window(timestamp: Any, start: int, end: int) -> bool:
    """An event a test broke on purpose (a timestamp that is not a number) is sent whatever the window."""
    try:
        return start <= int(timestamp) <= end
    except (TypeError, ValueError):
        return True


def _cents(value: Any) -> float:
    return float(value)


class CursorAdminServer(ScriptedServer):
    thread_name = "cursor-admin-server"

    def __init__(self, team: CursorTeam | None = None, *, key: str = "key_cursor_test", max_range_days: int = 30,
                 cycle_start: date | None = None, page_cap: int | None = None, **team_kw: Any) -> None:
        super().__init__()
        self.team = team or CursorTeam(**team_kw)
        self.key = key
        self.max_range_days = max_range_days
        self.cycle_start = cycle_start or self.team.start
        self.page_cap = page_cap  # answer at most this many items per page, whatever pageSize asks
        self.unreadable_paging = False  # True: pagination.currentPage is a word (a client must stop, not loop)
        self.faults = Faults()

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self.faults.fail_next(status, times, retry_after)

    # -- what a full sync must store ---------------------------------------
    def totals(self, since: date | None = None) -> dict[str, Any]:
        events = [e for e in self.team.events if since is None or int(e["timestamp"]) >= day_ms(since)]
        usage = [e["tokenUsage"] for e in events if "tokenUsage" in e]
        return {
            "events": len(events),
            "charged_cents": sum(_cents(e["chargedCents"]) for e in events),
            "input_tokens": sum(u["inputTokens"] for u in usage),
            "output_tokens": sum(u["outputTokens"] for u in usage),
            "cache_read_tokens": sum(u["cacheReadTokens"] for u in usage),
            "cache_write_tokens": sum(u["cacheWriteTokens"] for u in usage),
            "daily_rows": len(self.team.daily),
            "requests": sum(r["composerRequests"] + r["chatRequests"] + r["agentRequests"] for r in self.team.daily),
            "lines_accepted": sum(r["acceptedLinesAdded"] for r in self.team.daily),
            "users": len({e["userEmail"] for e in events}),
        }

    # -- answers -----------------------------------------------------------
    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.key and password == ""

    def _capped(self, size: int) -> int:
        return min(size, self.page_cap) if self.page_cap else size

    def _events(self, body: dict[str, Any]) -> tuple[int, Any]:
        start, end = int(body["startDate"]), int(body["endDate"])
        page, size = int(body.get("page", 1)), int(body.get("pageSize", 100))
        if size < 1 or size > 1000 or page < 1:
            return 400, {"error": "pageSize must be 1..1000"}
        size = self._capped(size)
        picked = [e for e in self.team.events if _in_window(e.get("timestamp"), start, end)]
        items, pages = page_of(picked, page, size)
        return 200, {
            "totalUsageEventsCount": len(picked),
            "pagination": {"numPages": pages, "currentPage": "first" if self.unreadable_paging else page,
                           "pageSize": size,
                           "hasNextPage": page < pages, "hasPreviousPage": page > 1},
            "usageEvents": items,
            "period": {"startDate": start, "endDate": end},
        }

    def _daily(self, body: dict[str, Any]) -> tuple[int, Any]:
        start, end = int(body["startDate"]), int(body["endDate"])
        if end < start or end - start > self.max_range_days * DAY_MS:
            return 400, {"error": f"date range must be at most {self.max_range_days} days"}
        page, size = int(body.get("page", 1)), self._capped(int(body.get("pageSize", 100)))
        rows = [r for r in self.team.daily if start <= r["date"] <= end]
        users = sorted({r["userId"] for r in rows})
        chosen, pages = page_of(users, page, size)
        wanted = set(chosen)
        return 200, {
            "data": [r for r in rows if r["userId"] in wanted],
            "period": {"startDate": start, "endDate": end},
            "pagination": {"page": page, "pageSize": size, "totalUsers": len(users), "totalPages": pages,
                           "hasNextPage": page < pages, "hasPreviousPage": page > 1},
        }

    def _spend(self, body: dict[str, Any]) -> tuple[int, Any]:
        page, size = int(body.get("page", 1)), self._capped(int(body.get("pageSize", 100)))
        since = day_ms(self.cycle_start)
        per_user: dict[str, float] = {}
        for e in self.team.events:
            if int(e["timestamp"]) >= since:
                per_user[e["userEmail"]] = per_user.get(e["userEmail"], 0.0) + _cents(e["chargedCents"])
        members = [{"userId": f"user_{i:05d}", "email": email, "name": email.split("@")[0], "role": "member",
                    "spendCents": round(cents, 4), "overallSpendCents": round(cents, 4),
                    "fastPremiumRequests": 0, "monthlyLimitDollars": None, "hardLimitOverrideDollars": 0}
                   for i, (email, cents) in enumerate(sorted(per_user.items()))]
        items, pages = page_of(members, page, size)
        return 200, {"teamMemberSpend": items, "subscriptionCycleStart": since,
                     "totalMembers": len(members), "totalPages": pages}

    def _handler_class(self) -> type[QuietHandler]:
        server = self
        routes = {"/teams/filtered-usage-events": server._events, "/teams/daily-usage-data": server._daily,
                  "/teams/spend": server._spend}

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.read_json()
                server.record_request(self, body)
                fault = server.faults.take()
                if fault:
                    status, headers = fault
                    self.send_json(status, {"error": "Too many requests" if status == 429 else "Server error"},
                                   headers)
                    return
                if not server._authorised(self.headers.get("Authorization")):
                    self.send_json(401, {"error": "Unauthorized", "message": "Invalid API key"})
                    return
                route = routes.get(urlsplit(self.path).path.rstrip("/"))
                if route is None:
                    self.send_json(404, {"error": "Not found"})
                    return
                try:
                    status, payload = route(body)
                except (KeyError, TypeError, ValueError) as exc:
                    status, payload = 400, {"error": f"bad request: {exc}"}
                self.send(status, json.dumps(payload).encode(), "application/json")

        return Handler
