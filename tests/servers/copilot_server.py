"""A scripted GitHub Copilot metrics and billing API on 127.0.0.1 (shapes of docs.github.com
copilot-usage-metrics and billing/usage, see /work/shared/formats/VENDOR_APIS.md A5).

    with CopilotServer(org="acme", users=3, days=5) as srv:
        srv.url                  # the API base (api.github.com in life)
        srv.totals()             # what a full sync must store
        srv.download_auth        # Authorization headers the download links received (must stay empty)

- `GET /orgs/{org}/copilot/metrics/reports/users-1-day?day=YYYY-MM-DD`:
  `{download_links:[…], report_day}`; the links are signed URLs (here on the same server,
  `/downloads/…?sig=…`) to NDJSON files, `users_per_file` users per file, so a day comes in
  several files. A day without a report (before the first or after the last generated day)
  is 404.
- `GET /organizations/{org}/settings/billing/premium_request/usage?year&month&day`:
  `{timePeriod, organization, usageItems:[{product, sku, model, unitType, pricePerUnit,
  grossQuantity, grossAmount, discountAmount, netQuantity, netAmount}]}`, amounts in dollars.
Auth is `Authorization: Bearer <token>` (or `token <token>`); a wrong token gets 401
`{"message": "Bad credentials"}`. A signed link needs no token and should get none.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers._admin_faults import Faults
from tests.servers._http import QuietHandler, ScriptedServer

MODELS = ["claude-sonnet-4.5", "gpt-5", "gemini-2.5-pro"]
PRICE = 0.04


@dataclass
class CopilotOrg:
    org: str = "acme"
    users: int = 3
    days: int = 5
    start: date = date(2026, 11, 1)
    seed: int = 13
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # day -> NDJSON records
    billing: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # day -> usage items

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        for d in range(self.days):
            day = (self.start + timedelta(days=d)).isoformat()
            self.records[day] = [self._record(rng, u, day) for u in range(self.users) if (u + d) % 4 != 3]
            items = []
            for m, model in enumerate(MODELS):
                gross = rng.randrange(0, 40 * self.users + 1)
                discounted = gross if (d + m) % 3 == 0 else rng.randrange(0, gross + 1)
                net = gross - discounted
                items.append({"product": "Copilot", "sku": "Copilot Premium Request", "model": model,
                              "unitType": "requests", "pricePerUnit": PRICE, "grossQuantity": gross,
                              "grossAmount": round(gross * PRICE, 2), "discountQuantity": discounted,
                              "discountAmount": round(discounted * PRICE, 2), "netQuantity": net,
                              "netAmount": round(net * PRICE, 2)})
            self.billing[day] = items

    @staticmethod
    def _record(rng: random.Random, u: int, day: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "day": day, "user_id": 1000 + u, "user_login": f"dev{u:03d}",
            "code_generation_activity_count": rng.randrange(1, 80),
            "code_acceptance_activity_count": rng.randrange(0, 40),
            "loc_added_sum": rng.randrange(0, 500), "loc_deleted_sum": rng.randrange(0, 100),
            "used_agent": u % 2 == 0,
            "totals_by_ide": [{"ide": "vscode", "code_generation_activity_count": 1}],
            "totals_by_feature": [{"feature": "agent", "user_initiated_interaction_count": rng.randrange(0, 9)}],
            "totals_by_model_feature": [{"model": MODELS[u % len(MODELS)], "feature": "chat_panel_agent_mode",
                                         "user_initiated_interaction_count": rng.randrange(0, 9)}],
        }
        if u % 3 == 0:
            record["totals_by_cli"] = {"token_usage": {"prompt_tokens_sum": rng.randrange(1_000, 300_000),
                                                       "output_tokens_sum": rng.randrange(100, 30_000)}}
        return record


class CopilotServer(ScriptedServer):
    thread_name = "copilot-server"

    def __init__(self, org_data: CopilotOrg | None = None, *, token: str = "ghp_test_token",
                 users_per_file: int = 50, **org_kw: Any) -> None:
        super().__init__()
        self.data = org_data or CopilotOrg(**org_kw)
        self.token = token
        self.users_per_file = users_per_file
        self.faults = Faults()
        self.download_auth: list[str] = []
        self.link_base: str | None = None  # where download links point (default: this server)

    @property
    def org(self) -> str:
        return self.data.org

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self.faults.fail_next(status, times, retry_after)

    def totals(self, since: str | None = None) -> dict[str, Any]:
        recs = [r for day, rs in self.data.records.items() if since is None or day >= since for r in rs]
        items = [i for day, its in self.data.billing.items() if since is None or day >= since for i in its]
        cli = [r["totals_by_cli"]["token_usage"] for r in recs if "totals_by_cli" in r]
        return {
            "user_days": len(recs),
            "generations": sum(r["code_generation_activity_count"] for r in recs),
            "acceptances": sum(r["code_acceptance_activity_count"] for r in recs),
            "agent_user_days": sum(1 for r in recs if r["used_agent"]),
            "prompt_tokens": sum(c["prompt_tokens_sum"] for c in cli),
            "output_tokens": sum(c["output_tokens_sum"] for c in cli),
            "net_usd": round(sum(i["netAmount"] for i in items), 2),
            "net_requests": sum(i["netQuantity"] for i in items),
        }

    # -- answers -----------------------------------------------------------
    def _authorised(self, header: str | None) -> bool:
        return header in (f"Bearer {self.token}", f"token {self.token}")

    def _report(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        day = (query.get("day") or [""])[0]
        records = self.data.records.get(day)
        if records is None:
            return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
        parts = max(1, -(-len(records) // self.users_per_file))
        links = [f"{self.link_base or self.url}/downloads/{day}/{p}.ndjson?sig=signed{p}&se=2026-12-31" for p in range(parts)]
        return 200, {"download_links": links, "report_day": day}

    def _download(self, path: str) -> bytes | None:
        try:
            _, _, day, name = path.split("/")
            part = int(name.removesuffix(".ndjson"))
        except ValueError:
            return None
        records = self.data.records.get(day)
        if records is None:
            return None
        chunk = records[part * self.users_per_file:(part + 1) * self.users_per_file]
        return "".join(json.dumps(r) + "\n" for r in chunk).encode()

    def _billing(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        try:
            year, month, day = (int(query[k][0]) for k in ("year", "month", "day"))
            key = date(year, month, day).isoformat()
        except (KeyError, ValueError):
            return 400, {"message": "year, month and day are required here"}
        return 200, {"timePeriod": {"year": year, "month": month, "day": day}, "organization": self.org,
                     "usageItems": self.data.billing.get(key, [])}

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                server.record_request(self, {})
                fault = server.faults.take()
                if fault:
                    status, headers = fault
                    self.send_json(status, {"message": "API rate limit exceeded" if status == 429 else "Server Error"},
                                   headers)
                    return
                if parts.path.startswith("/downloads/"):
                    if self.headers.get("Authorization"):
                        server.download_auth.append(self.headers["Authorization"])
                    payload = server._download(parts.path)
                    if payload is None:
                        self.send_json(404, {"message": "BlobNotFound"})
                    else:
                        self.send(200, payload, "application/x-ndjson")
                    return
                if not server._authorised(self.headers.get("Authorization")):
                    self.send_json(401, {"message": "Bad credentials",
                                         "documentation_url": "https://docs.github.com/rest"})
                    return
                query = parse_qs(parts.query)
                if parts.path == f"/orgs/{server.org}/copilot/metrics/reports/users-1-day":
                    status, payload = server._report(query)
                elif parts.path == f"/organizations/{server.org}/settings/billing/premium_request/usage":
                    status, payload = server._billing(query)
                else:
                    status, payload = 404, {"message": "Not Found"}
                self.send_json(status, payload)

        return Handler
