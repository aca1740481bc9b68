"""Anthropic Admin API: message usage (tier vendor), the cost report (tier billed) and Claude Code
analytics (tier vendor). Shapes and units: /work/shared/formats/VENDOR_APIS.md A1 and docs/usage.md."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from loopmeter.telemetry import tokens
from loopmeter.vendors.base import (
    Auth,
    Connector,
    Report,
    SyncContext,
    VendorRow,
    amount,
    count,
    day,
    rfc3339,
    text,
    token_paging,
)
from loopmeter.vocab import Tier

MESSAGES = "/v1/organizations/usage_report/messages"
COSTS = "/v1/organizations/cost_report"
CLAUDE_CODE = "/v1/organizations/usage_report/claude_code"
BUCKETS_PER_PAGE = 31  # the most a 1d bucket_width allows


def _auth(key: str) -> Auth:
    return Auth(headers={"x-api-key": key, "anthropic-version": "2023-06-01"})


def _window(ctx: SyncContext) -> dict[str, Any]:
    return {"starting_at": rfc3339(ctx.start), "ending_at": rfc3339(ctx.end + timedelta(days=1)),
            "bucket_width": "1d", "limit": BUCKETS_PER_PAGE}


def _buckets(ctx: SyncContext, path: str, group_by: list[str]) -> Iterator[tuple[str, Any]]:
    """(day, results) of every daily bucket in the window, over all pages."""
    params = {**_window(ctx), "group_by[]": group_by}
    for page in ctx.http.paginate("GET", path, token_paging(), params=params):
        for bucket in ctx.items(page.get("data") if isinstance(page, dict) else None):
            try:
                yield day(bucket["starting_at"]), bucket.get("results")
            except (KeyError, TypeError, ValueError, AttributeError):
                ctx.malformed += 1


def fetch_messages(ctx: SyncContext) -> Iterator[VendorRow]:
    """Daily tokens per API key, workspace and model. Cache writes: 5-minute + 1-hour (each kept in extra)."""
    for d, results in _buckets(ctx, MESSAGES, ["api_key_id", "workspace_id", "model"]):
        def parse(r: dict[str, Any], d: str = d) -> VendorRow:
            creation = r.get("cache_creation") or {}
            w5, w1 = count(creation.get("ephemeral_5m_input_tokens")), count(creation.get("ephemeral_1h_input_tokens"))
            key_id, workspace, model = text(r.get("api_key_id")), text(r.get("workspace_id")), text(r.get("model"))
            search = count((r.get("server_tool_use") or {}).get("web_search_requests"))
            counts = tokens.anthropic(count(r.get("uncached_input_tokens")), count(r.get("cache_read_input_tokens")),
                                      None if w5 is None and w1 is None else (w5 or 0) + (w1 or 0),
                                      count(r.get("output_tokens")), w1)
            return VendorRow(
                key=f"{d}/{key_id}/{workspace}/{model}", date=d, tier=Tier.VENDOR, vendor_user=key_id, model=model,
                input_tokens=counts.input_tokens, output_tokens=counts.output_tokens,
                cache_read_tokens=counts.cache_read_tokens, cache_write_tokens=counts.cache_write_tokens,
                extra={"workspace_id": workspace, "cache_write_5m_tokens": w5, "cache_write_1h_tokens": w1,
                       "web_search_requests": search})
        yield from ctx.each(results, parse)


def fetch_costs(ctx: SyncContext) -> Iterator[VendorRow]:
    """What the organisation is charged per day, workspace and line item: `amount` is a decimal
    string in cents. Lines with the same dimensions are summed by the sync (same key)."""
    for d, results in _buckets(ctx, COSTS, ["workspace_id", "description"]):
        def parse(r: dict[str, Any], d: str = d) -> VendorRow:
            currency = r.get("currency", "USD")
            if not isinstance(currency, str) or currency.upper() != "USD":
                raise ValueError(f"currency {currency!r}")
            workspace, description, model = text(r.get("workspace_id")), text(r.get("description")), text(r.get("model"))
            cost_type, token_type = text(r.get("cost_type"), 64), text(r.get("token_type"), 64)
            return VendorRow(
                key=f"{d}/{workspace}/{description}/{model}/{cost_type}/{token_type}/{text(r.get('service_tier'), 32)}",
                date=d, tier=Tier.BILLED, model=model, cost_usd=amount(r["amount"], "cents"),
                extra={"workspace_id": workspace, "description": description, "cost_type": cost_type,
                       "token_type": token_type, "service_tier": text(r.get("service_tier"), 32)})
        yield from ctx.each(results, parse)


def fetch_claude_code(ctx: SyncContext) -> Iterator[VendorRow]:
    """Per actor and UTC day: one activity row (sessions, lines, commits, PRs, tool actions) and one
    row per model with tokens and the estimated cost (`amount` a number in cents)."""
    for first, _ in ctx.days():
        params = {"starting_at": first.isoformat(), "limit": 1000}
        for page in ctx.http.paginate("GET", CLAUDE_CODE, token_paging(), params=params):
            yield from ctx.each(page.get("data") if isinstance(page, dict) else None, _claude_code_record)


def _claude_code_record(rec: dict[str, Any]) -> list[VendorRow]:
    d = day(rec["date"])
    actor = rec.get("actor") or {}
    who = text(actor.get("email_address")) or text(actor.get("api_key_name"))
    if who is None:
        raise ValueError("a record without an actor")
    core = rec.get("core_metrics") or {}
    lines = core.get("lines_of_code") or {}
    tools = rec.get("tool_actions") or {}
    accepted = sum(count((v or {}).get("accepted")) or 0 for v in tools.values()) if isinstance(tools, dict) else None
    rejected = sum(count((v or {}).get("rejected")) or 0 for v in tools.values()) if isinstance(tools, dict) else None
    rows = [VendorRow(
        key=f"{d}/{who}/activity", date=d, tier=Tier.VENDOR, vendor_user=who,
        extra={"sessions": count(core.get("num_sessions")), "lines_added": count(lines.get("added")),
               "lines_removed": count(lines.get("removed")), "commits": count(core.get("commits_by_claude_code")),
               "pull_requests": count(core.get("pull_requests_by_claude_code")),
               "tool_accepted": accepted, "tool_rejected": rejected,
               "terminal_type": text(rec.get("terminal_type"), 64), "customer_type": text(rec.get("customer_type"), 32)})]
    for m in rec.get("model_breakdown") or []:
        model = text(m.get("model"))
        tokens = m.get("tokens") or {}
        cost = m.get("estimated_cost") or {}
        currency = cost.get("currency", "USD")
        if not isinstance(currency, str) or currency.upper() != "USD":
            raise ValueError(f"currency {currency!r}")
        rows.append(VendorRow(
            key=f"{d}/{who}/{model}", date=d, tier=Tier.VENDOR, vendor_user=who, model=model,
            cost_usd=amount(cost.get("amount"), "cents"), input_tokens=count(tokens.get("input")),
            output_tokens=count(tokens.get("output")), cache_read_tokens=count(tokens.get("cache_read")),
            cache_write_tokens=count(tokens.get("cache_creation")), extra={"estimated": True}))
    return rows


CONNECTOR = Connector(
    name="anthropic",
    title="Anthropic Admin API",
    key_name="anthropic-admin",
    default_url="https://api.anthropic.com",
    auth=_auth,
    reports=(Report("usage_report/messages", fetch_messages), Report("cost_report", fetch_costs),
             Report("usage_report/claude_code", fetch_claude_code, agent="claude-code")),
)
