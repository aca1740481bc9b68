"""Windsurf (Codeium) analytics: Cascade runs and credits per UTC day, user and model (tier vendor).

Windsurf reports credits, not tokens or dollars. Credits are stored as credits; a row gets a
`cost_usd` only when the user sets a credit price in loopmeter.toml:

    [vendors.windsurf]
    credit_usd = 0.04

`CascadeAnalytics` rows carry no user, so the connector lists the team with `UserPageAnalytics`
and asks for each person's runs (`emails: [one]`). Numbers arrive as strings and zero fields are
left out (a missing `promptsUsed` is 0 credits); `promptsUsed` is hundredths of a credit.
`UserPageAnalytics`' `promptCreditsUsed` (the billing cycle so far) is kept in the sync cursor as
a check, never added to the days. Shapes: /work/shared/formats/VENDOR_APIS.md A4 and docs/usage.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    rfc3339,
    text,
)
from loopmeter.vocab import Tier

CASCADE = "/api/v1/CascadeAnalytics"
USERS = "/api/v1/UserPageAnalytics"


def _auth(key: str) -> Auth:
    """The service key travels in every JSON body, not in a header."""
    return Auth(body={"service_key": key})


def credit_price(options: dict[str, Any]) -> float | None:
    """`[vendors.windsurf] credit_usd`: dollars per credit, or None (credits stay credits)."""
    value = options.get("credit_usd")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"[vendors.windsurf] credit_usd must be a number of dollars >= 0, not {value!r}",
                          hint="e.g. credit_usd = 0.04, or leave it out to keep credits as credits")
    return float(value)


def _zero(value: Any) -> Any:
    """Windsurf leaves zero fields out: a missing number is 0, not unknown."""
    return 0 if value is None else value


@dataclass
class _RunFigure:
    runs: set[str] = field(default_factory=set)
    messages: int = 0
    credits: float = 0.0
    modes: dict[str, int] = field(default_factory=dict)


def _add_run(figures: dict[tuple[str, str | None], _RunFigure], r: dict[str, Any]) -> None:
    d, model = day(r["day"]), text(r.get("model"))
    messages = count(_zero(r.get("messagesSent")))
    credits = amount(_zero(r.get("promptsUsed")), "cents")
    run_id, mode = text(r.get("cascadeId")), text(r.get("mode"), 64) or "unknown"
    fig = figures.setdefault((d, model), _RunFigure())  # everything read: now add
    fig.runs.add(run_id or f"#{len(fig.runs)}")
    fig.messages += messages or 0
    fig.credits += credits or 0.0
    fig.modes[mode] = fig.modes.get(mode, 0) + 1


def _emails(ctx: SyncContext) -> list[str]:
    """The team from UserPageAnalytics; its cycle credits go in the cursor as a check."""
    body: dict[str, Any] = {}
    if isinstance(ctx.options.get("group_name"), str):
        body["group_name"] = ctx.options["group_name"]
    reply = ctx.http.post(USERS, body)
    emails: list[str] = []
    cycle: list[float] = []

    def user(u: dict[str, Any]) -> None:
        email = text(u.get("email"))
        if email is None:
            raise ValueError("a user without an email")
        credits = amount(_zero(u.get("promptCreditsUsed")), "cents")
        emails.append(email)
        cycle.append(credits or 0.0)

    for _ in ctx.each(reply.get("userTableStats") if isinstance(reply, dict) else None, user):
        pass
    if not emails:  # the days read would be replaced by nothing: keep what is stored instead
        raise VendorError("windsurf: UserPageAnalytics listed nobody, so no one's runs could be read",
                          hint="check the service key's team (and group_name under [vendors.windsurf])")
    ctx.cursor_out.update({"users": len(emails), "cycle_credits": round(sum(cycle), 6)})
    return sorted(set(emails))


def _results(reply: Any, name: str) -> Any:
    """queryResults[] holds one object per query request; find the one named `name` (cascadeRuns...)."""
    results = reply.get("queryResults") if isinstance(reply, dict) else None
    for result in results if isinstance(results, list) else []:
        if isinstance(result, dict) and isinstance(result.get(name), dict):
            return result[name].get(name)
    return None


def fetch_cascade(ctx: SyncContext) -> Iterator[VendorRow]:
    """Per person: runs, messages and credits per UTC day and model; lines suggested and accepted per day."""
    price = credit_price(ctx.options)
    window = {"start_timestamp": rfc3339(ctx.start), "end_timestamp": f"{ctx.end.isoformat()}T23:59:59Z"}
    for email in _emails(ctx):
        reply = ctx.http.post(CASCADE, {**window, "emails": [email],
                                        "query_requests": [{"cascade_lines": {}}, {"cascade_runs": {}}]})
        figures: dict[tuple[str, str | None], _RunFigure] = {}

        for _ in ctx.each(_results(reply, "cascadeRuns"), partial(_add_run, figures)):
            pass
        for (d, model), fig in sorted(figures.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            credits = round(fig.credits, 6)
            yield VendorRow(key=f"runs/{d}/{email}/{model}", date=d, tier=Tier.VENDOR, vendor_user=email, model=model,
                            credits=credits, cost_usd=None if price is None else round(credits * price, 8),
                            requests=fig.messages, extra={"runs": len(fig.runs), "modes": fig.modes})

        def lines(r: dict[str, Any], email: str = email) -> VendorRow:
            d = day(r["day"])
            return VendorRow(key=f"lines/{d}/{email}", date=d, tier=Tier.VENDOR, vendor_user=email,
                             extra={"lines_suggested": count(_zero(r.get("linesSuggested"))),
                                    "lines_accepted": count(_zero(r.get("linesAccepted")))})

        yield from ctx.each(_results(reply, "cascadeLines"), lines)


CONNECTOR = Connector(
    name="windsurf",
    title="Windsurf analytics API",
    key_name="windsurf",
    default_url="https://server.codeium.com",
    auth=_auth,
    reports=(Report("CascadeAnalytics", fetch_cascade),),
)
