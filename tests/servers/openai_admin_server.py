"""A scripted OpenAI organization usage and costs API on 127.0.0.1 (shapes and units of openai-openapi,
see /work/shared/formats/VENDOR_APIS.md A2).

    with OpenAIAdminServer(users=3, days=5) as srv:        # a generated organisation, deterministic
        base_url = srv.url                                 # Authorization: Bearer <admin key>
        srv.totals()                                       # what a full sync must store
        srv.fail_next(429, retry_after="1")

Endpoints (GET):
- `/v1/organization/usage/completions` start_time (unix s, inclusive), end_time (exclusive),
  bucket_width=1d, group_by (project_id, api_key_id, model...), limit (<= 31, default 7), page:
  results whose `input_tokens` INCLUDE `input_cached_tokens` and `input_cache_write_tokens`.
- `/v1/organization/costs` same window, group_by (project_id, line_item, api_key_id), limit 1..180:
  `amount: {value: <dollars, a number>, currency: "usd"}`, line_item "<model>, input|output|cached input".
A wrong key gets 401; a bad query 400.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers._admin_faults import Faults
from tests.servers._http import QuietHandler, ScriptedServer

MODELS = ["gpt-5-2025-08-07", "gpt-5-mini-2025-08-07", "o4-mini-2025-04-16"]
PRICES = {"gpt-5-2025-08-07": (1.25, 10, 0.125), "gpt-5-mini-2025-08-07": (0.25, 2, 0.025),
          "o4-mini-2025-04-16": (1.1, 4.4, 0.275)}  # $ per million: input, output, cached input


def _day(ts: int) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _unix(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


@dataclass
class OpenAIOrg:
    users: int = 3
    days: int = 5
    start: date = date(2026, 11, 1)
    seed: int = 13
    completions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    costs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.completions or self.costs:
            return
        rng = random.Random(self.seed)
        for d in range(self.days):
            day = (self.start + timedelta(days=d)).isoformat()
            results = []
            for u in range(self.users):
                for m in MODELS[: 1 + u % 2]:
                    uncached, cached, write = rng.randrange(1_000, 300_000), rng.randrange(0, 900_000), 0
                    results.append(completion(f"proj_{u % 3}", f"key_{u:04d}", m, uncached=uncached, cached=cached,
                                              cache_write=write, output=rng.randrange(100, 60_000),
                                              requests=rng.randrange(1, 400)))
            self.completions[day] = results
            self.costs[day] = costs_of(results)


def completion(project: str, api_key: str, model: str, *, uncached: int, cached: int, cache_write: int, output: int,
               requests: int) -> dict[str, Any]:
    result = {"object": "organization.usage.completions.result", "project_id": project, "api_key_id": api_key,
              "model": model, "user_id": None, "batch": None, "input_tokens": uncached + cached + cache_write,
              "input_cached_tokens": cached, "output_tokens": output, "num_model_requests": requests}
    if cache_write:
        result["input_cache_write_tokens"] = cache_write
    return result


def cost(project: str | None, line_item: str | None, dollars: float) -> dict[str, Any]:
    return {"object": "organization.costs.result", "amount": {"value": dollars, "currency": "usd"},
            "line_item": line_item, "project_id": project, "api_key_id": None, "quantity": None,
            "quantity_unit": None}


def costs_of(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sums: dict[tuple[str, str], float] = {}
    for r in results:
        p_in, p_out, p_cached = PRICES[r["model"]]
        uncached = r["input_tokens"] - r["input_cached_tokens"] - r.get("input_cache_write_tokens", 0)
        for kind, n, p in (("input", uncached, p_in), ("output", r["output_tokens"], p_out),
                           ("cached input", r["input_cached_tokens"], p_cached)):
            k = (r["project_id"], f"{r['model']}, {kind}")
            sums[k] = sums.get(k, 0.0) + n * p / 1e6
    return [cost(p, li, round(v, 6)) for (p, li), v in sorted(sums.items())]


def _sum_into(acc: dict[str, Any], r: dict[str, Any]) -> None:
    if "amount" in acc:
        acc["amount"] = {**acc["amount"], "value": acc["amount"]["value"] + r["amount"]["value"]}
        return
    for f in ("input_tokens", "input_cached_tokens", "input_cache_write_tokens", "output_tokens", "num_model_requests"):
        if f in r:
            acc[f] = acc.get(f, 0) + r[f]


class OpenAIAdminServer(ScriptedServer):
    thread_name = "openai-admin-server"

    def __init__(self, org: OpenAIOrg | None = None, *, key: str = "sk-admin-test-key-0000", **org_kw: Any):
        super().__init__()
        self.org = org or OpenAIOrg(**org_kw)
        self.key = key
        self.faults = Faults()

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self.faults.fail_next(status, times, retry_after)

    def totals(self) -> dict[str, Any]:
        rs = [r for v in self.org.completions.values() for r in v]
        return {
            "uncached_input_tokens": sum(r["input_tokens"] - r["input_cached_tokens"]
                                         - r.get("input_cache_write_tokens", 0) for r in rs),
            "cache_read_tokens": sum(r["input_cached_tokens"] for r in rs),
            "output_tokens": sum(r["output_tokens"] for r in rs),
            "requests": sum(r["num_model_requests"] for r in rs),
            "billed_usd": sum(c["amount"]["value"] for v in self.org.costs.values() for c in v),
        }

    def _buckets(self, q: dict[str, list[str]], table: dict[str, list[dict[str, Any]]], dims: tuple[str, ...],
                 max_limit: int) -> tuple[int, Any]:
        if q.get("bucket_width", ["1d"])[0] != "1d":
            return 400, {"error": {"message": "only 1d is scripted", "type": "invalid_request_error"}}
        start = _day(int(q["start_time"][0]))
        end = _day(int(q["end_time"][0])) if "end_time" in q else start + timedelta(days=7)
        limit = int(q.get("limit", ["7"])[0])
        if not 1 <= limit <= max_limit:
            return 400, {"error": {"message": f"limit must be 1..{max_limit}", "type": "invalid_request_error"}}
        group_by = q.get("group_by", []) + q.get("group_by[]", [])
        if any(g not in dims for g in group_by):
            return 400, {"error": {"message": f"group_by among {dims}", "type": "invalid_request_error"}}
        days = [start + timedelta(days=i) for i in range((end - start).days)]
        offset = int(q["page"][0].removeprefix("page_")) if "page" in q else 0
        chosen = days[offset:offset + limit]
        data = []
        for d in chosen:
            grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
            for r in table.get(d.isoformat(), []):
                k = tuple(r.get(g) for g in dims if g in group_by)
                if k in grouped:
                    _sum_into(grouped[k], r)
                else:
                    grouped[k] = {**r, **{g: None for g in dims if g not in group_by}}
            data.append({"object": "bucket", "start_time": _unix(d), "end_time": _unix(d + timedelta(days=1)),
                         "results": list(grouped.values())})
        more = offset + limit < len(days)
        return 200, {"object": "page", "data": data, "has_more": more,
                     "next_page": f"page_{offset + limit}" if more else None}

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.record_request(self, None)
                fault = server.faults.take()
                if fault:
                    status, headers = fault
                    self.send_json(status, {"error": {"message": "scripted fault", "type": "rate_limit"}}, headers)
                    return
                if self.headers.get("Authorization") != f"Bearer {server.key}":
                    self.send_json(401, {"error": {"message": "Incorrect API key provided",
                                                   "type": "invalid_request_error", "code": "invalid_api_key"}})
                    return
                parts = urlsplit(self.path)
                q = parse_qs(parts.query)
                try:
                    if parts.path == "/v1/organization/usage/completions":
                        status, payload = server._buckets(q, server.org.completions,
                                                          ("project_id", "user_id", "api_key_id", "model", "batch",
                                                           "service_tier"), 31)
                    elif parts.path == "/v1/organization/costs":
                        status, payload = server._buckets(q, server.org.costs,
                                                          ("project_id", "line_item", "api_key_id"), 180)
                    else:
                        status, payload = 404, {"error": {"message": "not found"}}
                except (KeyError, ValueError) as exc:
                    status, payload = 400, {"error": {"message": f"bad query: {exc}"}}
                self.send_json(status, payload)

        return Handler
