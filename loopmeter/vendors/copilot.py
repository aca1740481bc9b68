"""GitHub Copilot: the usage-metrics reports (tier vendor: per user and UTC day, activity,
acceptances, agent use, CLI tokens) and premium-request billing (tier billed: net amounts in
dollars per day and model).

The organisation comes from loopmeter.toml:

    [vendors.copilot]
    org = "acme"

A report is a list of signed download links to NDJSON files; the links are fetched without
the GitHub token (it must not travel to the storage host). A day without a report yet (404)
is skipped and read again by a later sync. Shapes: /work/shared/formats/VENDOR_APIS.md A5 and
docs/usage.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from functools import partial
from typing import Any

from loopmeter.errors import ConfigError
from loopmeter.vendors.base import (
    Auth,
    Connector,
    Report,
    SyncContext,
    VendorError,
    VendorRow,
    amount,
    count,
    day,
    text,
)
from loopmeter.vocab import Tier

REPORT = "/orgs/{org}/copilot/metrics/reports/users-1-day"
BILLING = "/organizations/{org}/settings/billing/premium_request/usage"
ORG_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")


def _auth(key: str) -> Auth:
    return Auth(headers={"Authorization": f"Bearer {key}", "Accept": "application/vnd.github+json",
                         "X-GitHub-Api-Version": "2022-11-28"})


def org_name(options: dict[str, Any]) -> str:
    org = options.get("org")
    if not isinstance(org, str) or not ORG_NAME.match(org):
        raise ConfigError(f"[vendors.copilot] org must name a GitHub organisation, not {org!r}",
                          hint='add to loopmeter.toml:  [vendors.copilot]  org = "your-org"')
    return org


def _days(ctx: SyncContext) -> Iterator[date]:
    for first, _ in ctx.days():
        yield first


def _user_record(rec: dict[str, Any]) -> VendorRow:
    d = day(rec["day"])
    who = text(rec.get("user_login"))
    if who is None:
        user_id = count(rec.get("user_id"))
        if user_id is None:
            raise ValueError("a record without a user")
        who = f"id:{user_id}"
    cli = rec.get("totals_by_cli")
    usage = cli.get("token_usage") if isinstance(cli, dict) else None
    if usage is not None and not isinstance(usage, dict):
        raise TypeError("token_usage is not an object")
    agent = rec.get("used_agent")
    return VendorRow(
        key=f"{d}/{who}", date=d, tier=Tier.VENDOR, vendor_user=who,
        requests=count(rec.get("code_generation_activity_count")),
        input_tokens=count(usage.get("prompt_tokens_sum")) if usage else None,
        output_tokens=count(usage.get("output_tokens_sum")) if usage else None,
        extra={"acceptances": count(rec.get("code_acceptance_activity_count")),
               "lines_added": count(rec.get("loc_added_sum")), "lines_deleted": count(rec.get("loc_deleted_sum")),
               "used_agent": agent if isinstance(agent, bool) else None, "cli_tokens": usage is not None})


def _ndjson(ctx: SyncContext, raw: bytes) -> Iterator[VendorRow]:
    """One record per line; a line that is not a JSON object is counted as malformed."""
    records: list[Any] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (ValueError, UnicodeDecodeError):
            ctx.malformed += 1
    yield from ctx.each(records, _user_record)


def fetch_metrics(ctx: SyncContext) -> Iterator[VendorRow]:
    """The users-1-day report of every day in the window: its NDJSON files, one row per user."""
    path = REPORT.format(org=org_name(ctx.options))
    missing: list[str] = []
    for d in _days(ctx):
        try:
            reply = ctx.http.get(path, {"day": d.isoformat()})
        except VendorError as exc:
            if exc.status == 404:  # not generated yet (or before the data starts)
                missing.append(d.isoformat())
                continue
            raise
        for link in ctx.items(reply.get("download_links") if isinstance(reply, dict) else None):
            if not isinstance(link, str):
                ctx.malformed += 1
                continue
            try:
                raw = ctx.http.download(link)
            except ConfigError:  # not https: the report is refused, not read in part
                raise VendorError(f"copilot: the {d.isoformat()} report links to a URL that is not https") from None
            yield from _ndjson(ctx, raw)
    ctx.cursor_out["days_without_report"] = missing[-31:]


def _billing_item(d: str, item: dict[str, Any]) -> VendorRow:
    product, sku, model = text(item.get("product"), 64), text(item.get("sku"), 128), text(item.get("model"))
    net = amount(item["netAmount"], "usd")
    quantities = {name: amount(item.get(name), "usd") for name in
                  ("grossQuantity", "discountQuantity", "netQuantity")}  # plain numbers; "usd" keeps them as given
    net_requests = quantities["netQuantity"]
    return VendorRow(
        key=f"{d}/{product}/{sku}/{model}", date=d, tier=Tier.BILLED, model=model, cost_usd=net,
        requests=int(net_requests) if net_requests is not None and float(net_requests).is_integer() else None,
        extra={"product": product, "sku": sku, "unit": text(item.get("unitType"), 32),
               "price_per_unit_usd": amount(item.get("pricePerUnit"), "usd"),
               "gross_usd": amount(item.get("grossAmount"), "usd"),
               "discount_usd": amount(item.get("discountAmount"), "usd"),
               "gross_quantity": quantities["grossQuantity"], "net_quantity": net_requests})


def fetch_billing(ctx: SyncContext) -> Iterator[VendorRow]:
    """Premium-request usage of every day in the window, per product, SKU and model: `netAmount`
    (dollars, after the plan's included requests) is what GitHub bills."""
    path = BILLING.format(org=org_name(ctx.options))
    for d in _days(ctx):
        reply = ctx.http.get(path, {"year": d.year, "month": d.month, "day": d.day})
        items = reply.get("usageItems") if isinstance(reply, dict) else None
        yield from ctx.each(items, partial(_billing_item, d.isoformat()))


CONNECTOR = Connector(
    name="copilot",
    title="GitHub Copilot metrics and billing",
    key_name="github",
    default_url="https://api.github.com",
    auth=_auth,
    reports=(Report("metrics/users-1-day", fetch_metrics), Report("billing/premium_request", fetch_billing)),
    overlap_days=4,  # reports can lag two days behind
    required_options=("org",),
)
