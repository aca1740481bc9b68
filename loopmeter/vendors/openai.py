"""OpenAI organization usage (completions, tier vendor) and costs (tier billed).
Shapes and units: /work/shared/formats/VENDOR_APIS.md A2 and docs/usage.md."""

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
    text,
    token_paging,
    unix,
)
from loopmeter.vocab import Tier

COMPLETIONS = "/v1/organization/usage/completions"
COSTS = "/v1/organization/costs"


def _auth(key: str) -> Auth:
    return Auth(headers={"Authorization": f"Bearer {key}"})


def _buckets(ctx: SyncContext, path: str, params: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    window = {"start_time": unix(ctx.start), "end_time": unix(ctx.end + timedelta(days=1)), "bucket_width": "1d"}
    for page in ctx.http.paginate("GET", path, token_paging(), params={**window, **params}):
        for bucket in ctx.items(page.get("data") if isinstance(page, dict) else None):
            try:
                yield day(bucket["start_time"]), bucket.get("results")
            except (KeyError, TypeError, ValueError, AttributeError):
                ctx.malformed += 1


def fetch_completions(ctx: SyncContext) -> Iterator[VendorRow]:
    """Daily tokens and requests per project, API key and model."""
    for d, results in _buckets(ctx, COMPLETIONS, {"group_by": ["project_id", "api_key_id", "model"], "limit": 31}):
        def parse(r: dict[str, Any], d: str = d) -> VendorRow:
            project, key_id, model = text(r.get("project_id")), text(r.get("api_key_id")), text(r.get("model"))
            counts = tokens.openai(count(r.get("input_tokens")), count(r.get("input_cached_tokens")),
                                   count(r.get("output_tokens")), None, count(r.get("input_cache_write_tokens")))
            return VendorRow(
                key=f"{d}/{project}/{key_id}/{model}/{r.get('batch')}", date=d, tier=Tier.VENDOR,
                vendor_user=text(r.get("user_id")) or key_id, model=model, input_tokens=counts.input_tokens,
                cache_read_tokens=counts.cache_read_tokens, cache_write_tokens=counts.cache_write_tokens,
                output_tokens=counts.output_tokens, requests=count(r.get("num_model_requests")),
                extra={"project_id": project})
        yield from ctx.each(results, parse)


def line_item_model(line_item: str | None) -> str | None:
    """The model a cost line names ("gpt-4o-2024-08-06, input" -> gpt-4o-2024-08-06); the line-item
    format is UNCONFIRMED in the spec, so a line without a comma names no model."""
    if not line_item or ", " not in line_item:
        return None
    return line_item.split(", ", 1)[0] or None


def fetch_costs(ctx: SyncContext) -> Iterator[VendorRow]:
    """What the organisation is charged per day, project and line item: `amount.value` in dollars."""
    for d, results in _buckets(ctx, COSTS, {"group_by": ["project_id", "line_item"], "limit": 180}):
        def parse(r: dict[str, Any], d: str = d) -> VendorRow:
            money = r["amount"]
            currency = money.get("currency", "usd")
            if not isinstance(currency, str) or currency.lower() != "usd":
                raise ValueError(f"currency {currency!r}")
            project, line_item = text(r.get("project_id")), text(r.get("line_item"))
            return VendorRow(
                key=f"{d}/{project}/{line_item}/{text(r.get('api_key_id'))}", date=d, tier=Tier.BILLED,
                vendor_user=text(r.get("api_key_id")), model=line_item_model(line_item),
                cost_usd=amount(money.get("value"), "usd"), extra={"project_id": project, "line_item": line_item})
        yield from ctx.each(results, parse)


CONNECTOR = Connector(
    name="openai",
    title="OpenAI organization usage and costs",
    key_name="openai-admin",
    default_url="https://api.openai.com",
    auth=_auth,
    reports=(Report("usage/completions", fetch_completions), Report("costs", fetch_costs)),
)
