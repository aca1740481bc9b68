"""`loopmeter vendors sync|status|spend` and `loopmeter reconcile`: what the vendors' admin APIs say
was used and billed, and how it compares with what loopmeter measured. JSON shapes in docs/usage.md."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Annotated, Any

import typer

from loopmeter.errors import LoopmeterError

app = typer.Typer(help="Usage and billed spend from the vendors' admin APIs (Anthropic, OpenAI, Cursor, "
                       "Windsurf, GitHub Copilot).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="vendors")
    root.command("reconcile")(reconcile)


def _day(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise LoopmeterError(f"{flag} {value!r} is not a date", hint="use YYYY-MM-DD") from None


def _open() -> tuple[Any, Any]:
    from loopmeter.config import load_settings
    from loopmeter.store import open_store

    settings = load_settings()
    return settings, open_store(settings.db_url)


@app.command("sync")
def sync(
    vendors: Annotated[list[str] | None, typer.Argument(
        help="Vendors to read (default: every vendor with a key).", show_default=False)] = None,
    api_url: Annotated[str | None, typer.Option(
        "--api-url", help="The vendor's base URL (one VENDOR only); else [vendors.NAME] api_url.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Read from this UTC day (default: 3 days before the last sync, or 30 days back).")] = None,
) -> None:
    """Read usage and costs from the vendors' admin APIs into the store (a re-sync replaces, never adds)."""
    from loopmeter.safe_text import printable
    from loopmeter.vendors import base

    settings, store = _open()
    failed = 0

    def show(r: base.SyncResult) -> None:
        nonlocal failed
        where = f"{r.vendor} {r.report}"
        if r.error:
            failed += 1
            typer.echo(f"{where}: error: {printable(r.error)}" + (f" ({r.hint})" if r.hint else ""), err=True)
            return
        bad = f", {r.malformed} malformed skipped" if r.malformed else ""
        typer.echo(f"{where}: {r.rows:,} rows, {r.start}..{r.end}, {r.requests} requests, {r.seconds:.1f} s{bad}")

    results = base.sync(store, settings, vendors or None, api_url_override=api_url, since=_day(since, "--since"),
                        progress=show)
    if not results:
        typer.echo("no vendor has a key: `loopmeter auth set anthropic-admin|openai-admin|cursor-admin|windsurf|"
                   "github` or the environment variables (loopmeter vendors status lists them)")
    if failed:
        raise typer.Exit(1)


@app.command("status")
def status(json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Per vendor and report: key, last sync, rows, newest day stored (data lag), last error; and the
    billing-cycle checks (Cursor's /teams/spend, Windsurf's cycle credits) beside the stored totals."""
    from loopmeter.analytics.vendors import cycle_checks, status_rows
    from loopmeter.reports.tables import check_text
    from loopmeter.safe_text import printable

    _, store = _open()
    rows = status_rows(store)
    checks = cycle_checks(store)
    if json_out:
        typer.echo(json.dumps({"rows": rows, "checks": checks}, indent=2))
        return
    for r in rows:
        key = f"key from {r['key_from']}" if r["key_from"] else f"no key ({r['key']} / {r['env_var']})"
        synced = r["synced_at"][:16].replace("T", " ") if r["synced_at"] else "never synced"
        lag = f"newest {r['newest_day']} ({r['lag_days']} d ago)" if r["newest_day"] else "no data"
        line = f"{r['vendor']:<10} {r['report']:<26} {key:<20} {synced:<16} {r['rows']:>8,} rows  {lag}"
        if r["last_error"]:
            line += f"  last error: {printable(r['last_error'])[:160]}"
        typer.echo(line)
    for check in checks:
        typer.echo(printable(check_text(check)))


@app.command("spend")
def spend(
    since: Annotated[str | None, typer.Option("--since", help="First UTC day (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last UTC day, inclusive.")] = None,
    vendor: Annotated[list[str] | None, typer.Option("--vendor", help="Only this vendor (repeatable).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON output (shape in docs/usage.md).")] = False,
) -> None:
    """Vendor figures per day, vendor, person, model and tier (billed or vendor)."""
    from loopmeter.analytics.vendors import spend_rows

    settings, store = _open()
    s, u = _day(since, "--since"), _day(until, "--until")
    rows = spend_rows(store, settings.people, s.isoformat() if s else None, u.isoformat() if u else None, vendor)
    if json_out:
        typer.echo(json.dumps({"rows": rows}, indent=2))
        return
    _print_spend(rows)


def _print_spend(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from loopmeter.reports import fmt
    from loopmeter.safe_text import printable

    if not rows:
        typer.echo("no vendor figures stored: loopmeter vendors sync")
        return
    table = Table()
    for col in ("date", "vendor", "user", "model", "tier", "cost", "credits", "input", "output", "cache read",
                "cache write"):
        table.add_column(col, justify="right" if col in ("cost", "credits", "input", "output", "cache read",
                                                          "cache write") else "left")
    for r in rows:
        table.add_row(r["date"], r["vendor"], printable(r["user"] or "—"), printable(r["model"] or "—"), r["tier"],
                      fmt.money(r["cost_usd"]), fmt.num(r["credits"], 2), fmt.tokens(r["input_tokens"]),
                      fmt.tokens(r["output_tokens"]), fmt.tokens(r["cache_read_tokens"]),
                      fmt.tokens(r["cache_write_tokens"]))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped: whole columns, not wrapped to 80
    console.print(table)


def reconcile(
    since: Annotated[str | None, typer.Option("--since", help="First UTC day (default: 30 days ago).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last UTC day, inclusive (default: today).")] = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="Mark days whose drift is over this percentage of the bill.")] = 10.0,
    models: Annotated[bool, typer.Option("--models", help="Also a table per day, vendor and model.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON output (shape in docs/usage.md).")] = False,
) -> None:
    """Billed spend (vendors' cost APIs) against what loopmeter measured (logs, OTLP, loops), per UTC
    day and vendor, and per model where both sides name it: drift in dollars and percent."""
    from datetime import UTC

    from loopmeter.analytics import tiers
    from loopmeter.analytics.filters import Filters
    from loopmeter.analytics.sums import Db, day_sums

    settings, store = _open()
    today = datetime.now(UTC).date()
    first = _day(since, "--since") or today - timedelta(days=30)
    last = _day(until, "--until") or today
    if last < first:
        raise LoopmeterError("--until is before --since")
    filters = Filters(since=datetime(first.year, first.month, first.day, tzinfo=UTC),
                      until=datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1))
    db = Db(store)
    try:
        result = tiers.reconcile(tiers.measured_figures(day_sums(db, filters)), tiers.vendor_figures(db, filters),
                                 threshold)
    finally:
        db.close()
    result["since"], result["until"] = first.isoformat(), last.isoformat()
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    print_reconcile(result, models=models)


def print_reconcile(result: dict[str, Any], models: bool = False) -> None:
    """The reconcile table as `loopmeter reconcile` prints it (benchmarks/vendors.py prints it too)."""
    from rich.console import Console
    from rich.table import Table

    from loopmeter.reports import fmt
    from loopmeter.safe_text import printable

    if not result["rows"]:
        typer.echo("nothing billed in the range: loopmeter vendors sync (Anthropic and OpenAI cost reports, "
                   "Cursor usage events, Copilot billing)")
        return
    console = Console(width=120)
    for rows, extra in ((result["rows"], ()), (result["models"] if models else [], ("model",))):
        if not rows:
            continue
        table = Table(title=f"billed against measured{' per model' if extra else ''}, "
                            f"UTC days {result['since']}..{result['until']}")
        for col in ("date", "vendor", *extra, "billed", "measured", "drift", "drift %", ""):
            table.add_column(col, justify="left" if col in ("date", "vendor", "model", "") else "right")
        for r in rows:
            drift = r["drift_usd"]
            table.add_row(r["date"], printable(r["vendor"]), *(printable(str(r[c])) for c in extra),
                          fmt.money(r["billed_usd"]), fmt.money(r["measured_usd"]),
                          "—" if drift is None else ("-" if drift < 0 else "+") + fmt.money(abs(drift)),
                          "—" if r["drift_pct"] is None else f"{r['drift_pct']:+.1f}%",
                          "!" if r["over_threshold"] else "")
        console.print(table)
    over = sum(r["over_threshold"] for r in result["rows"])
    typer.echo(f"! = drift over {result['threshold_pct']:g}% of the bill, or a bill with nothing measured: "
               f"{over} of {len(result['rows'])} day(s); "
               f"{len(result['models'])} day/model pair(s) compared (--models or --json lists them)")
