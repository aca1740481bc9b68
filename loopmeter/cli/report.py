"""`loopmeter report`: the dashboard's KPIs as markdown, one self-contained HTML file, CSV or JSON.

JSON keys (stable, schema "loopmeter.report/1"; see docs/metrics.md): schema, generated_at, filters,
value_model, spend, outcomes, cost_per_outcome, velocity, roi, wasted, by {agent, model, provider, source,
project, user}, spend_by_day, spend_by_day_agent, spend_by_week, agents, experiments_per_week, pull_requests, vendors
{days, vendors, synced}, evals, audit.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from loopmeter.errors import LoopmeterError

FORMATS = ("md", "html", "csv", "json")


def register(root: typer.Typer) -> None:
    root.command("report")(report)


def parse_when(value: str | None, tz_name: str, *, end: bool = False) -> datetime | None:
    """A date (the instant its local day begins in `tz_name`; an --until date includes that whole
    day) or an ISO datetime."""
    from zoneinfo import ZoneInfo

    from loopmeter.analytics.days import day_begins

    if value is None:
        return None
    tz = UTC if tz_name == "UTC" else ZoneInfo(tz_name)
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return day_begins(d + timedelta(days=1) if end else d, tz)
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise LoopmeterError(f"cannot read the date {value!r}", hint="use YYYY-MM-DD or an ISO date-time") from exc
    return (t.replace(tzinfo=tz) if t.tzinfo is None else t).astimezone(UTC)


def build_filters(since: str | None, until: str | None, range_: str | None, tz: str, now: datetime,
                  **dims: Any) -> Any:
    from loopmeter.analytics.filters import RANGES, Filters, range_filters

    base = Filters(timezone=tz, **dims)
    if since or until:
        return base.replace(since=parse_when(since, tz), until=parse_when(until, tz, end=True))
    name = range_ or "30d"
    if name not in RANGES:
        raise LoopmeterError(f"unknown range {name!r}", hint="one of " + ", ".join(RANGES))
    return range_filters(name, now, base)


def report(
    since: Annotated[str | None, typer.Option(help="Start: YYYY-MM-DD (local) or ISO date-time.")] = None,
    until: Annotated[str | None, typer.Option(help="End (inclusive day): YYYY-MM-DD or ISO date-time.")] = None,
    range_: Annotated[str | None, typer.Option("--range", help="24h, 7d, 30d (default), 90d or all.")] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="md, html, csv or json.")] = "md",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project (usage) / attempt project.")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user.")] = None,
    source: Annotated[str | None, typer.Option(help="Only usage rows from this source (loop, claude-code-log, ...).")] = None,
    repo: Annotated[str | None, typer.Option(help="Only runs in this repo path.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone for days and weeks (default: settings, else UTC).")] = None,
    scan: Annotated[bool, typer.Option("--scan/--no-scan", help="Look for merged Loopmeter-Run commits in run repos first.")] = True,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Verify the audit chain for the report.")] = True,
) -> None:
    """Spend, outcomes, velocity, ROI and waste for a date range, in one file."""
    if format_ not in FORMATS:
        raise LoopmeterError(f"unknown format {format_!r}", hint="one of " + ", ".join(FORMATS))
    from loopmeter.analytics import chain_check
    from loopmeter.config import load_settings
    from loopmeter.records import utcnow

    settings = load_settings()
    tz = timezone or settings.timezone or "UTC"
    try:
        from zoneinfo import ZoneInfo

        if tz != "UTC":
            ZoneInfo(tz)
    except Exception as exc:
        raise LoopmeterError(f"unknown time zone {tz!r}", hint="use an IANA name such as Europe/Berlin") from exc
    now = utcnow()
    filters = build_filters(since, until, range_, tz, now, agent=agent, model=model, project=project, user=user,
                            source=source, repo=repo)
    # the audit chain is verified in a child process that starts before this one loads pandas
    # (on an existing store: a new one is created below, and compute starts the check then)
    exists = settings.db_path is None or settings.db_path.is_file()
    checking = chain_check.start(settings.db_url) if verify and exists else None
    try:
        from loopmeter.analytics.kpis import compute
        from loopmeter.analytics.outcomes import refresh_outcomes
        from loopmeter.store import open_store

        store = open_store(settings.db_url)
        try:
            if scan:
                refresh_outcomes(store)
            data = compute(store, filters, value=settings.value, home=settings.home, now=now,
                           verify_chain=verify, chain_check=checking)
        finally:
            store.dispose()
    finally:
        if checking is not None and checking.poll() is None:  # left running by an error
            checking.kill()
            checking.wait()
    from loopmeter.reports import render

    text = render(data, format_)
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output} ({len(text):,} bytes)", err=True)
