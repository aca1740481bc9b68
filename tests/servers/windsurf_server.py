"""A scripted Windsurf (Codeium) analytics API on 127.0.0.1 (shapes of
docs.windsurf.com/plugins/accounts/api-reference, see /work/shared/formats/VENDOR_APIS.md A4).

    with WindsurfServer(users=3, days=5) as srv:
        srv.url + "/api/v1/CascadeAnalytics"     # POST, the service key is in the JSON body
        srv.totals()                             # what a full sync must store (credits, runs)

Every call is `POST /api/v1/<Endpoint>` with `service_key` in the body (no auth header).
- `CascadeAnalytics` {service_key, emails[]?, start_timestamp, end_timestamp (RFC 3339),
  query_requests:[{cascade_lines:{}}, {cascade_runs:{}}, {cascade_tool_usage:{}}]}: one query
  result per request, in order. Numbers arrive AS STRINGS and zero fields are OMITTED
  (a run on a free model has no `promptsUsed`). `promptsUsed` is credits in hundredths
  (100 = 1 credit). Rows carry no user: filter with `emails` to get one person's.
- `UserPageAnalytics` {service_key, start_timestamp?, end_timestamp?}: `userTableStats[]` per user,
  `promptCreditsUsed` (hundredths of a credit, current cycle; a string, omitted when zero).
The API has no paging. A wrong key gets 401.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from tests.servers._admin_faults import Faults
from tests.servers._http import QuietHandler, ScriptedServer

MODELS = ["Claude Sonnet 4.5", "SWE-1.5", "GPT-5 (medium reasoning)"]
FREE_MODELS = {"SWE-1.5"}


def _strings(row: dict[str, Any]) -> dict[str, Any]:
    """As the API sends it: integers as strings, zero fields left out."""
    return {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in row.items() if v not in (0, None, "")}


@dataclass
class WindsurfTeam:
    users: int = 3
    days: int = 5
    start: date = date(2026, 11, 1)
    runs_per_day: int = 2
    seed: int = 11
    runs: list[dict[str, Any]] = field(default_factory=list)  # with "email" (not sent) for filtering
    lines: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        n = 0
        for u in range(self.users):
            email = f"dev{u:03d}@example.com"
            for d in range(self.days):
                day = self.start + timedelta(days=d)
                for _ in range(self.runs_per_day):
                    model = MODELS[n % len(MODELS)]
                    self.runs.append({"email": email, "day": f"{day.isoformat()}T00:00:00Z", "model": model,
                                      "mode": "CONVERSATIONAL_PLANNER_MODE_DEFAULT",
                                      "messagesSent": rng.randrange(1, 12), "cascadeId": f"cascade-{n:07d}",
                                      "promptsUsed": 0 if model in FREE_MODELS else rng.randrange(25, 900)})
                    n += 1
                self.lines.append({"email": email, "day": f"{day.isoformat()}T00:00:00Z",
                                   "linesSuggested": rng.randrange(0, 300), "linesAccepted": rng.randrange(0, 100)})


def _day(value: str) -> str:
    return value[:10]


class WindsurfServer(ScriptedServer):
    thread_name = "windsurf-server"

    def __init__(self, team: WindsurfTeam | None = None, *, key: str = "svc_windsurf_test", **team_kw: Any) -> None:
        super().__init__()
        self.team = team or WindsurfTeam(**team_kw)
        self.key = key
        self.faults = Faults()
        self._indexes: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = {}

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self.faults.fail_next(status, times, retry_after)

    def totals(self, since: date | None = None) -> dict[str, Any]:
        runs = [r for r in self.team.runs if since is None or _day(r["day"]) >= since.isoformat()]
        return {
            "runs": len(runs),
            "credits": sum(r["promptsUsed"] for r in runs) / 100,
            "messages": sum(r["messagesSent"] for r in runs),
            "users": len({r["email"] for r in runs}),
            "lines_accepted": sum(r["linesAccepted"] for r in self.team.lines),
        }

    def cycle_credits(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.team.runs:
            if isinstance(r["promptsUsed"], int):  # a run a test broke on purpose counts nothing
                out[r["email"]] = out.get(r["email"], 0) + r["promptsUsed"]
        return out

    # -- answers -----------------------------------------------------------
    @staticmethod
    def _window(body: dict[str, Any]) -> tuple[str, str]:
        start = body.get("start_timestamp") or "0001-01-01T00:00:00Z"
        end = body.get("end_timestamp") or "9999-12-31T23:59:59Z"
        for value in (start, end):
            datetime.fromisoformat(value.replace("Z", "+00:00"))  # ValueError -> 400
        return start, end

    def _cascade(self, body: dict[str, Any]) -> tuple[int, Any]:
        start, end = self._window(body)
        emails = set(body.get("emails") or [])

        def picked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if emails:  # one person's rows by index: the 200-person benchmark measures the client, not this
                index = self._index(rows)
                rows = [r for e in sorted(emails) for r in index.get(e, [])]
            return [_strings({k: v for k, v in r.items() if k != "email"}) for r in rows
                    if start <= r["day"] <= end]

        results: list[dict[str, Any]] = []
        for request in body.get("query_requests") or []:
            if "cascade_runs" in request:
                rows = picked(self.team.runs)
                results.append({"cascadeRuns": {"cascadeRuns": rows}})
            elif "cascade_lines" in request:
                rows = picked(self.team.lines)
                results.append({"cascadeLines": {"cascadeLines": rows}})
            elif "cascade_tool_usage" in request:
                results.append({"cascadeToolUsage": {"cascadeToolUsage": [{"tool": "CODE_ACTION", "count": "3"}]}})
            else:
                return 400, {"error": f"unknown query request {sorted(request)}"}
        return 200, {"queryResults": results}

    def _index(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        key = id(rows), len(rows)
        if key not in self._indexes:
            index: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                index.setdefault(r["email"], []).append(r)
            self._indexes[key] = index
        return self._indexes[key]

    def _users(self, body: dict[str, Any]) -> tuple[int, Any]:
        credits = self.cycle_credits()
        stats = []
        for u in range(self.team.users):
            email = f"dev{u:03d}@example.com"
            row = {"name": f"Dev {u}", "email": email, "apiKey": f"hashed-{u:04d}", "activeDays": self.team.days,
                   "role": "user", "teamStatus": "USER_TEAM_STATUS_APPROVED",
                   "lastUpdateTime": "2026-12-01T10:00:00Z", "promptCreditsUsed": credits.get(email, 0)}
            stats.append(_strings(row))
        return 200, {"userTableStats": stats}

    def _handler_class(self) -> type[QuietHandler]:
        server = self
        routes = {"/api/v1/CascadeAnalytics": server._cascade, "/api/v1/UserPageAnalytics": server._users}

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.read_json()
                server.record_request(self, body)
                fault = server.faults.take()
                if fault:
                    status, headers = fault
                    self.send_json(status, {"error": "rate limited" if status == 429 else "internal"}, headers)
                    return
                if not isinstance(body, dict) or body.get("service_key") != server.key:
                    self.send_json(401, {"code": "unauthenticated", "message": "invalid service key"})
                    return
                route = routes.get(urlsplit(self.path).path.rstrip("/"))
                if route is None:
                    self.send_json(404, {"code": "not_found"})
                    return
                try:
                    status, payload = route(body)
                except (KeyError, TypeError, ValueError) as exc:
                    status, payload = 400, {"code": "invalid_argument", "message": str(exc)}
                self.send(status, json.dumps(payload).encode(), "application/json")

        return Handler
