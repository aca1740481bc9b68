"""A scripted Anthropic Admin API on 127.0.0.1 (shapes and units of platform.claude.com's usage and
cost API and Claude Code analytics API, see /work/shared/formats/VENDOR_APIS.md A1).

    with AnthropicAdminServer(users=3, days=5) as srv:     # a generated organisation, deterministic
        base_url = srv.url                                 # headers x-api-key + anthropic-version
        srv.totals()                                       # what a full sync must store
        srv.fail_next(429, retry_after="1")                # scripted faults (tests/servers/_admin_faults.py)

Endpoints (GET):
- `/v1/organizations/usage_report/messages` starting_at, ending_at (RFC 3339), bucket_width=1d,
  limit (buckets, <= 31, default 7), group_by[] (model, api_key_id, workspace_id), page:
  `{data:[{starting_at, ending_at, results:[{api_key_id, workspace_id, model, service_tier,
  context_window, uncached_input_tokens, cache_read_input_tokens, cache_creation:{ephemeral_5m_input_tokens,
  ephemeral_1h_input_tokens}, output_tokens, server_tool_use:{web_search_requests}}]}], has_more, next_page}`;
  a dimension not grouped by is null (and summed over).
- `/v1/organizations/cost_report` same window and paging, group_by[] workspace_id, description:
  `amount` is a DECIMAL STRING IN CENTS, `currency: "USD"`; one web-search line a day has no model.
- `/v1/organizations/usage_report/claude_code` starting_at=YYYY-MM-DD (that UTC day only),
  limit (<= 1000, default 20), page: records per actor (a user's email, or an API key's name) with
  core_metrics, tool_actions and model_breakdown whose `estimated_cost.amount` is a NUMBER IN CENTS.
A wrong key gets 401 (authentication_error); a bad query 400; an unknown path 404 whose message
echoes the key it got (as a careless gateway might: the client must not repeat it).
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers._admin_faults import Faults
from tests.servers._http import QuietHandler, ScriptedServer

MODELS = ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001"]
# $ per million tokens: input, output, cache read, 5m write, 1h write
PRICES = {"claude-sonnet-4-5-20250929": (3, 15, 0.3, 3.75, 6), "claude-opus-4-1-20250805": (15, 75, 1.5, 18.75, 30),
          "claude-haiku-4-5-20251001": (1, 5, 0.1, 1.25, 2)}
TOKEN_TYPES = ["uncached_input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation.ephemeral_5m_input_tokens", "cache_creation.ephemeral_1h_input_tokens"]


def _rfc(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def _iso(d: date) -> str:
    return f"{d.isoformat()}T00:00:00Z"


@dataclass
class AnthropicOrg:
    """Generated usage: per day, per API key and model, message tokens; the cost lines priced
    from them (in cents, as strings); Claude Code analytics per user and day."""

    users: int = 3
    days: int = 5
    start: date = date(2026, 11, 1)
    seed: int = 11
    # day -> list of message results (all dimensions set)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # day -> list of cost results (all dimensions set)
    costs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # day -> Claude Code records
    claude_code: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.messages or self.costs or self.claude_code:
            return  # given by the test
        rng = random.Random(self.seed)
        for d in range(self.days):
            day = (self.start + timedelta(days=d)).isoformat()
            results, cc = [], []
            for u in range(self.users):
                models = MODELS[: 1 + u % len(MODELS)]
                for m in models:
                    results.append(message_result(
                        f"apikey_{u:04d}", f"wrkspc_{u % 4}" if u % 4 else None, m,
                        uncached=rng.randrange(1_000, 400_000), cache_read=rng.randrange(0, 2_000_000),
                        write_5m=rng.randrange(0, 80_000), write_1h=rng.randrange(0, 20_000) if u % 2 else 0,
                        output=rng.randrange(500, 90_000)))
                if rng.random() < 0.85:
                    cc.append(claude_code_record(day, f"dev{u:03d}@example.com" if u % 10 else None,
                                                 None if u % 10 else f"ci-key-{u:03d}", rng, models))
            self.messages[day] = results
            self.costs[day] = costs_of(results) + [cost_line(None, None, "Web search", "web_search", None,
                                                             f"{rng.randrange(1, 500) / 100:.2f}")]
            self.claude_code[day] = cc


def message_result(api_key_id: str | None, workspace_id: str | None, model: str, *, uncached: int, cache_read: int,
                   write_5m: int, write_1h: int, output: int) -> dict[str, Any]:
    return {"api_key_id": api_key_id, "workspace_id": workspace_id, "model": model, "service_tier": "standard",
            "context_window": "0-200k", "uncached_input_tokens": uncached, "cache_read_input_tokens": cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": output, "server_tool_use": {"web_search_requests": 0}}


def cost_line(workspace_id: str | None, model: str | None, description: str, cost_type: str,
              token_type: str | None, cents: str) -> dict[str, Any]:
    return {"amount": cents, "currency": "USD", "cost_type": cost_type, "description": description, "model": model,
            "service_tier": "standard" if model else None, "context_window": "0-200k" if model else None,
            "token_type": token_type, "workspace_id": workspace_id}


def costs_of(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cost lines per (workspace, model, token type), cents as decimal strings."""
    sums: dict[tuple[Any, str, str], float] = {}
    for r in results:
        price = PRICES[r["model"]]
        counts = [r["uncached_input_tokens"], r["output_tokens"], r["cache_read_input_tokens"],
                  r["cache_creation"]["ephemeral_5m_input_tokens"], r["cache_creation"]["ephemeral_1h_input_tokens"]]
        for token_type, n, p in zip(TOKEN_TYPES, counts, price, strict=True):
            k = (r["workspace_id"], r["model"], token_type)
            sums[k] = sums.get(k, 0.0) + n * p / 1e6 * 100
    return [cost_line(ws, model, f"{model} usage - {tt}", "tokens", tt, f"{cents:.4f}")
            for (ws, model, tt), cents in sorted(sums.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2]))]


def claude_code_record(day: str, email: str | None, key_name: str | None, rng: random.Random,
                       models: list[str], cost_cents: list[float] | None = None) -> dict[str, Any]:
    actor = ({"type": "user_actor", "email_address": email} if email else
             {"type": "api_actor", "api_key_name": key_name})
    breakdown = []
    for i, m in enumerate(models):
        cents = cost_cents[i] if cost_cents else round(rng.uniform(5, 4000), 2)
        breakdown.append({"model": m, "tokens": {"input": rng.randrange(100, 50_000), "output": rng.randrange(100, 40_000),
                                                 "cache_read": rng.randrange(0, 900_000),
                                                 "cache_creation": rng.randrange(0, 60_000)},
                          "estimated_cost": {"amount": cents, "currency": "USD"}})
    return {"date": day, "organization_id": "org_test", "customer_type": "api", "subscription_type": None,
            "terminal_type": "vscode", "actor": actor,
            "core_metrics": {"num_sessions": rng.randrange(1, 12), "lines_of_code": {"added": rng.randrange(0, 900),
                                                                                     "removed": rng.randrange(0, 300)},
                             "commits_by_claude_code": rng.randrange(0, 6),
                             "pull_requests_by_claude_code": rng.randrange(0, 3)},
            "tool_actions": {t: {"accepted": rng.randrange(0, 40), "rejected": rng.randrange(0, 5)}
                             for t in ("edit_tool", "multi_edit_tool", "write_tool", "notebook_edit_tool")},
            "model_breakdown": breakdown}


def _token(n: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(n).encode()).decode()


def _untoken(page: str | None) -> int:
    if not page:
        return 0
    return int(base64.urlsafe_b64decode(page.removeprefix("page_").encode()).decode())


_DIMS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window")
_COST_DIMS = ("workspace_id", "description")


def _grouped(results: list[dict[str, Any]], group_by: list[str], dims: tuple[str, ...],
             measure: Any) -> list[dict[str, Any]]:
    """Results summed over the dimensions not in group_by (those read null), as the API does."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in results:
        k = tuple(r.get(d) if d in group_by else None for d in dims)
        if k not in out:
            out[k] = {**r, **{d: None for d in dims if d not in group_by}}
            if "description" in dims and "description" not in group_by:
                out[k].update(model=None, token_type=None, cost_type=None, service_tier=None, context_window=None)
        else:
            measure(out[k], r)
    return list(out.values())


def _add_message(acc: dict[str, Any], r: dict[str, Any]) -> None:
    for f in ("uncached_input_tokens", "cache_read_input_tokens", "output_tokens"):
        acc[f] += r[f]
    acc["cache_creation"] = {k: acc["cache_creation"][k] + r["cache_creation"][k] for k in acc["cache_creation"]}


def _add_cost(acc: dict[str, Any], r: dict[str, Any]) -> None:
    acc["amount"] = f"{float(acc['amount']) + float(r['amount']):.4f}"


class AnthropicAdminServer(ScriptedServer):
    thread_name = "anthropic-admin-server"

    def __init__(self, org: AnthropicOrg | None = None, *, key: str = "sk-ant-admin01-test-key-0000",
                 claude_code_page: int | None = None, **org_kw: Any):
        super().__init__()
        self.org = org or AnthropicOrg(**org_kw)
        self.key = key
        self.claude_code_page = claude_code_page  # serve at most this many records a page, whatever the limit
        self.faults = Faults()

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self.faults.fail_next(status, times, retry_after)

    # -- what a full sync must store ---------------------------------------
    def totals(self) -> dict[str, Any]:
        msgs = [r for rs in self.org.messages.values() for r in rs]
        cc = [m for rs in self.org.claude_code.values() for rec in rs for m in rec["model_breakdown"]]
        return {
            "uncached_input_tokens": sum(r["uncached_input_tokens"] for r in msgs),
            "cache_read_tokens": sum(r["cache_read_input_tokens"] for r in msgs),
            "cache_write_tokens": sum(r["cache_creation"]["ephemeral_5m_input_tokens"]
                                      + r["cache_creation"]["ephemeral_1h_input_tokens"] for r in msgs),
            "output_tokens": sum(r["output_tokens"] for r in msgs),
            "billed_usd": sum(float(c["amount"]) for cs in self.org.costs.values() for c in cs) / 100,
            "claude_code_usd": sum(m["estimated_cost"]["amount"] for m in cc) / 100,
            "claude_code_records": sum(len(rs) for rs in self.org.claude_code.values()),
            "sessions": sum(rec["core_metrics"]["num_sessions"] for rs in self.org.claude_code.values() for rec in rs),
        }

    # -- answers -----------------------------------------------------------
    def _buckets(self, q: dict[str, list[str]], table: dict[str, list[dict[str, Any]]], dims: tuple[str, ...],
                 measure: Any, max_limit: int) -> tuple[int, Any]:
        if q.get("bucket_width", ["1d"])[0] != "1d":
            return 400, _error("invalid_request_error", "only bucket_width=1d is scripted")
        start = _rfc(q["starting_at"][0])
        end = _rfc(q["ending_at"][0]) if "ending_at" in q else start + timedelta(days=7)
        limit = int(q.get("limit", ["7"])[0])
        if not 1 <= limit <= max_limit:
            return 400, _error("invalid_request_error", f"limit must be 1..{max_limit}")
        group_by = q.get("group_by[]", [])
        if any(g not in dims for g in group_by):
            return 400, _error("invalid_request_error", f"group_by must be among {dims}")
        days = []
        d = start
        while d < end:
            days.append(d.date())
            d += timedelta(days=1)
        offset = _untoken(q.get("page", [None])[0])
        chosen = days[offset:offset + limit]
        data = [{"starting_at": _iso(x), "ending_at": _iso(x + timedelta(days=1)),
                 "results": _grouped(table.get(x.isoformat(), []), group_by, dims, measure)} for x in chosen]
        more = offset + limit < len(days)
        return 200, {"data": data, "has_more": more, "next_page": _token(offset + limit) if more else None}

    def _claude_code(self, q: dict[str, list[str]]) -> tuple[int, Any]:
        day = date.fromisoformat(q["starting_at"][0]).isoformat()
        limit = int(q.get("limit", ["20"])[0])
        if not 1 <= limit <= 1000:
            return 400, _error("invalid_request_error", "limit must be 1..1000")
        records = self.org.claude_code.get(day, [])
        limit = min(limit, self.claude_code_page or limit)
        offset = _untoken(q.get("page", [None])[0])
        more = offset + limit < len(records)
        return 200, {"data": records[offset:offset + limit], "has_more": more,
                     "next_page": _token(offset + limit) if more else None}

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.record_request(self, None)
                fault = server.faults.take()
                if fault:
                    status, headers = fault
                    kind = "rate_limit_error" if status == 429 else "api_error"
                    self.send_json(status, _error(kind, "scripted fault"), headers)
                    return
                if self.headers.get("x-api-key") != server.key or not self.headers.get("anthropic-version"):
                    self.send_json(401, _error("authentication_error", "invalid x-api-key"))
                    return
                parts = urlsplit(self.path)
                q = parse_qs(parts.query)
                try:
                    if parts.path == "/v1/organizations/usage_report/messages":
                        status, payload = server._buckets(q, server.org.messages, _DIMS, _add_message, 31)
                    elif parts.path == "/v1/organizations/cost_report":
                        status, payload = server._buckets(q, server.org.costs, _COST_DIMS, _add_cost, 31)
                    elif parts.path == "/v1/organizations/usage_report/claude_code":
                        status, payload = server._claude_code(q)
                    else:
                        # a careless gateway: echoes the key it was given
                        key = self.headers.get("x-api-key")
                        status, payload = 404, _error("not_found_error", f"no such endpoint for key {key}")
                except (KeyError, ValueError) as exc:
                    status, payload = 400, _error("invalid_request_error", f"bad query: {exc}")
                self.send_json(status, payload)

        return Handler


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
