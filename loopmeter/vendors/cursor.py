"""Cursor Admin API: usage events (tier billed: Σ chargedCents per day, user and model), daily
usage data (tier vendor: requests and accepted lines per user and day) and the team's spend in
the current billing cycle (a check kept in the sync cursor, never added to the daily spend).
Shapes and units: /work/shared/formats/VENDOR_APIS.md A3 and docs/usage.md."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

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

EVENTS = "/teams/filtered-usage-events"
DAILY = "/teams/daily-usage-data"
SPEND = "/teams/spend"
EVENTS_PAGE = 1000  # the most the API allows
DAILY_PAGE = 100
SPEND_PAGE = 100
DAILY_RANGE_DAYS = 30  # daily-usage-data refuses a longer range
REQUEST_FIELDS = ("composerRequests", "chatRequests", "agentRequests")
LINE_FIELDS = {"acceptedLinesAdded": "lines_added", "acceptedLinesDeleted": "lines_deleted",
               "totalTabsShown": "tabs_shown", "totalTabsAccepted": "tabs_accepted",
               "usageBasedReqs": "usage_based_requests"}


def _auth(key: str) -> Auth:
    """HTTP Basic: the admin key as the user name, an empty password."""
    return Auth(headers={"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()})


def epoch_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _window_ms(first: date, last: date) -> dict[str, int]:
    """startDate..endDate in epoch ms, both inclusive, covering the UTC days first..last whole."""
    return {"startDate": epoch_ms(first), "endDate": epoch_ms(last + timedelta(days=1)) - 1}


def page_numbers(pagination: str, current: str, has_next: str = "hasNextPage") -> Any:
    """Cursor's numbered paging: the next `page` while `pagination[has_next]` is true."""
    def next_page(page: Any) -> dict[str, Any] | None:
        info = page.get(pagination) if isinstance(page, dict) else None
        if not isinstance(info, dict) or info.get(has_next) is not True:
            return None
        try:
            number = count(info.get(current))
        except (ValueError, TypeError):
            number = None
        if number is None:  # an error of the sync (one line), not a malformed item to skip
            raise VendorError(f"cursor: hasNextPage without a readable {pagination}.{current}")
        return {"page": number + 1}
    return next_page


@dataclass
class _DayFigure:
    """Usage events of one day, user and model, summed."""

    events: int = 0
    charged_usd: float | None = None  # None while no event said chargedCents (never $0 for unknown)
    tokens: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(
        ("input", "output", "cache_read", "cache_write")))
    token_usd: float | None = None
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, event: dict[str, Any]) -> None:
        charged = amount(event.get("chargedCents"), "cents")
        usage = event.get("tokenUsage")
        tokens = {}
        if usage is not None:
            if not isinstance(usage, dict):
                raise TypeError("tokenUsage is not an object")
            tokens = {"input": count(usage.get("inputTokens")), "output": count(usage.get("outputTokens")),
                      "cache_read": count(usage.get("cacheReadTokens")),
                      "cache_write": count(usage.get("cacheWriteTokens"))}
            token_usd = amount(usage.get("totalCents"), "cents")
        else:
            token_usd = None
        kind = text(event.get("kind"), 64) or "unknown"
        # everything read: now add (a malformed event changes nothing)
        self.events += 1
        if charged is not None:
            self.charged_usd = (self.charged_usd or 0.0) + charged
        for name, value in tokens.items():
            if value is not None:
                self.tokens[name] = (self.tokens[name] or 0) + value
        if token_usd is not None:
            self.token_usd = (self.token_usd or 0.0) + token_usd
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def fetch_events(ctx: SyncContext) -> Iterator[VendorRow]:
    """Every usage event of the window, summed per UTC day, user and model. `cost_usd` is Σ
    chargedCents (what Cursor bills; $0 for events included in the plan); tokens as reported;
    Cursor's own value of the tokens (Σ tokenUsage.totalCents) goes in extra."""
    figures: dict[tuple[str, str | None, str | None], _DayFigure] = {}

    def add(event: dict[str, Any]) -> None:
        d = day(event["timestamp"])  # epoch ms, as a string
        who = (text(event.get("userEmail")) or text(event.get("serviceAccountId"))
               or text(event.get("cloudAgentId")) or text(event.get("automationId")))
        figures.setdefault((d, who, text(event.get("model"))), _DayFigure()).add(event)

    body = {**_window_ms(ctx.start, ctx.end), "page": 1, "pageSize": EVENTS_PAGE}
    pages = ctx.http.paginate("POST", EVENTS, page_numbers("pagination", "currentPage"), json_body=body)
    for page in pages:
        for _ in ctx.each(page.get("usageEvents") if isinstance(page, dict) else None, add):
            pass
    for (d, who, model), fig in sorted(figures.items(), key=lambda kv: tuple(str(p) for p in kv[0])):
        yield VendorRow(
            key=f"{d}/{who}/{model}", date=d, tier=Tier.BILLED, vendor_user=who, model=model,
            cost_usd=None if fig.charged_usd is None else round(fig.charged_usd, 8), requests=fig.events,
            input_tokens=fig.tokens["input"], output_tokens=fig.tokens["output"],
            cache_read_tokens=fig.tokens["cache_read"], cache_write_tokens=fig.tokens["cache_write"],
            extra={"events": fig.events, "kinds": fig.kinds,
                   "token_usd": None if fig.token_usd is None else round(fig.token_usd, 8)})


def _daily_row(row: dict[str, Any]) -> VendorRow | None:
    d = day(row.get("day") or row["date"])
    who = text(row.get("email")) or text(row.get("userId"))
    if who is None:
        raise ValueError("a daily row without a user")
    requests = [count(row.get(name)) for name in REQUEST_FIELDS]
    extra: dict[str, Any] = {label: count(row.get(name)) for name, label in LINE_FIELDS.items()}
    extra["active"] = row.get("isActive") if isinstance(row.get("isActive"), bool) else None
    extra["most_used_model"] = text(row.get("mostUsedModel"))
    extra.update({name: value for name, value in zip(REQUEST_FIELDS, requests, strict=True)})
    known = [r for r in requests if r is not None]
    if extra["active"] is False and not any(known) and not any(extra[k] for k in LINE_FIELDS.values()):
        return None  # a paged answer lists every member: someone who did nothing that day is no figure
    return VendorRow(key=f"{d}/{who}", date=d, tier=Tier.VENDOR, vendor_user=who,
                     requests=sum(known) if known else None, extra=extra)


def fetch_daily(ctx: SyncContext) -> Iterator[VendorRow]:
    """Requests (composer + chat + agent) and accepted lines per user and UTC day, 30 days per call."""
    for first, last in ctx.days(DAILY_RANGE_DAYS):
        body = {**_window_ms(first, last), "page": 1, "pageSize": DAILY_PAGE}
        for page in ctx.http.paginate("POST", DAILY, page_numbers("pagination", "page"), json_body=body):
            yield from ctx.each(page.get("data") if isinstance(page, dict) else None, _daily_row)


def fetch_spend(ctx: SyncContext) -> Iterator[VendorRow]:
    """The billing cycle so far per member (`overallSpendCents`). A cycle total is not a day's
    figure: it is kept in the sync cursor (cycle start, members, total) to check the events'
    Σ chargedCents against, and adds no row."""
    asked = {"page": 1}

    def next_page(page: Any) -> dict[str, Any] | None:
        try:
            total = count(page.get("totalPages")) if isinstance(page, dict) else None
        except (ValueError, TypeError):
            raise VendorError("cursor: /teams/spend sent an unreadable totalPages") from None
        if total is None or asked["page"] >= total:
            return None
        asked["page"] += 1
        return {"page": asked["page"]}

    members: dict[str, float] = {}
    cycle_start: str | None = None

    def member(m: dict[str, Any]) -> None:
        who = text(m.get("email")) or text(m.get("userId"))
        cents = m.get("overallSpendCents", m.get("spendCents"))
        usd = amount(cents, "cents")
        if who is None or usd is None:
            raise ValueError("a member without a user or a spend")
        members[who] = usd

    body = {"page": 1, "pageSize": SPEND_PAGE, "sortBy": "user", "sortDirection": "asc"}
    for page in ctx.http.paginate("POST", SPEND, next_page, json_body=body):
        if isinstance(page, dict) and page.get("subscriptionCycleStart") is not None and cycle_start is None:
            try:
                cycle_start = day(page["subscriptionCycleStart"])
            except (TypeError, ValueError):
                ctx.malformed += 1
        for _ in ctx.each(page.get("teamMemberSpend") if isinstance(page, dict) else None, member):
            pass
    ctx.cursor_out.update({"cycle_start": cycle_start, "cycle_members": len(members),
                           "cycle_spend_usd": round(sum(members.values()), 6)})
    return iter(())


CONNECTOR = Connector(
    name="cursor",
    title="Cursor Admin API",
    key_name="cursor-admin",
    default_url="https://api.cursor.com",
    auth=_auth,
    reports=(Report("filtered-usage-events", fetch_events), Report("daily-usage-data", fetch_daily),
             Report("spend", fetch_spend, window=False)),
)
