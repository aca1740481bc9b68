"""`loopmeter usage [daily|weekly|monthly|session|blocks]`: tokens and cost per period.

Reads what is new in the agents' logs first (only stats files when nothing changed),
then reports from the store. The `--json` shape is documented in docs/usage.md.
A current store is read without SQLAlchemy: SQLite through the stdlib's sqlite3,
PostgreSQL through psycopg (store/pg_read.py).
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopmeter.errors import LoopmeterError

if TYPE_CHECKING:
    from loopmeter.analytics.usage import PeriodRow, Totals, UsageReport
    from loopmeter.store.pg_read import PgReader
    from loopmeter.telemetry.ingest.runner import IngestReport

PERIODS = ("daily", "weekly", "monthly", "session", "blocks")
LOG_SOURCES = ("claude-code", "codex", "gemini")


def register(root: typer.Typer) -> None:
    root.command("usage")(usage)


def _date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.replace("/", "-")) if "-" in value or "/" in value else \
            date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError as exc:
        raise LoopmeterError(f"{flag} {value!r} is not a date", hint="use YYYY-MM-DD") from exc


def usage(
    period: Annotated[str, typer.Argument(help="daily, weekly, monthly, session or blocks.")] = "daily",
    since: Annotated[str | None, typer.Option("--since", help="First day (YYYY-MM-DD), local time.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last day (YYYY-MM-DD), inclusive.")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", "-z", help="IANA zone for days (default: local).")] = None,
    source: Annotated[list[str] | None, typer.Option(
        "--source", help="claude-code, codex, gemini, otlp or loop (repeatable).")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only projects whose path contains this.")] = None,
    breakdown: Annotated[bool, typer.Option("--breakdown", help="One line per model under each period.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON output (shape in docs/usage.md).")] = False,
    no_ingest: Annotated[bool, typer.Option("--no-ingest", help="Report what is stored; read no logs.")] = False,
    path: Annotated[list[Path] | None, typer.Option(
        "--path", help="Read these log files or folders instead of the default places (repeatable).")] = None,
) -> None:
    """Tokens (input, output, cache write/read, reasoning), cost and cache hits per period, from every agent."""
    from loopmeter.analytics.usage import SOURCE_GROUPS, Query, resolve_tz, usage_report
    from loopmeter.config import load_settings

    if period not in PERIODS:
        raise LoopmeterError(f"unknown period {period!r}", hint=f"one of {', '.join(PERIODS)}")
    sources = list(source or [])
    for s in sources:
        if s not in SOURCE_GROUPS:
            raise LoopmeterError(f"unknown source {s!r}", hint=f"one of {', '.join(SOURCE_GROUPS)}")
    settings = load_settings()
    q = Query(period=period, since=_date(since, "--since"), until=_date(until, "--until"),
              tz=timezone or settings.timezone, sources=sources, project=project)
    resolve_tz(q.tz)  # an unknown zone fails here, before any log is read
    db_url = settings.db_url
    ingest_report = None
    store = None
    reader, new_pg = _pg_reader(db_url)
    try:
        if not no_ingest:
            log_sources = [s for s in sources if s in LOG_SOURCES] if sources else list(LOG_SOURCES)
            if log_sources:
                ingest_report, store = _ingest(db_url, log_sources, path, reader, new_pg)
        if store is None and reader is None and not (settings.db_path and settings.db_path.is_file()):
            from loopmeter.store import open_store

            store = open_store(db_url)  # creates and migrates a new database
        target: Any = reader or (db_url if settings.db_path else (store or _open(db_url)))
        report = usage_report(target, q)
    finally:
        if reader is not None:
            reader.close()
    if ingest_report is not None:
        for p, n in sorted(ingest_report.malformed.items()):
            typer.echo(f"{n} malformed line{'s' if n != 1 else ''} skipped in {p}", err=True)
        for p, err in sorted(ingest_report.errors.items()):
            typer.echo(f"could not read {p}: {err}", err=True)
    if json_out:
        out = report.as_json()
        if ingest_report is not None:
            out["ingest"] = ingest_report.as_dict()
        typer.echo(json.dumps(out, indent=2))
    else:
        _print_table(report, breakdown)


def _open(db_url: str) -> Any:
    from loopmeter.store import open_store

    return open_store(db_url)


def _pg_reader(db_url: str) -> tuple[PgReader | None, bool]:
    """A psycopg connection to the store when it is PostgreSQL with the current schema (cursors
    and sums are read without SQLAlchemy), else None: the Store creates or migrates it; and
    whether it is a PostgreSQL database where no store was made yet."""
    from loopmeter.store.pg_read import PgReader, is_postgres

    if not is_postgres(db_url):
        return None, False
    reader = PgReader(db_url)
    if reader.schema_current():
        return reader, False
    new = reader.is_new()
    reader.close()
    return None, new


def _ingest(db_url: str, sources: list[str], paths: list[Path] | None,
            reader: PgReader | None, new_pg: bool = False) -> tuple[IngestReport, Any]:
    """Plan by stat only; open the store (SQLAlchemy) just when there is something to read, and
    when it is new (no cursors to read first) while the workers read."""
    from loopmeter.telemetry.ingest.runner import IngestReport, discover, load_cursors, plan, run

    files = discover(sources, paths)
    work = plan(files, load_cursors(db_url, reader))
    if not work:
        return IngestReport(files_seen=len(files)), None
    opened: list[Any] = []

    def open_it() -> Any:  # called by `run` once its worker processes are reading
        if not opened:
            if reader is not None:  # a current PostgreSQL store: psycopg writes and reads it
                opened.append(None)
                return None
            if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
                from loopmeter.store import sqlite_schema

                if sqlite_schema.ready(Path(db_url.removeprefix("sqlite:///"))):
                    opened.append(None)  # current (or just created): ingest and report need no Store
                    return None
            from loopmeter.store import open_store  # SQLAlchemy: imported while the workers read

            opened.append(open_store(db_url))
        return opened[0]

    target: Any = open_it
    if not db_url.startswith("sqlite:///") and reader is None and not new_pg:
        target = open_it()  # an older store, or not PostgreSQL: migrated first
        work = plan(files, load_cursors(db_url, target))  # the cursors are only readable now
    if not sys.stderr.isatty():
        return run(target, db_url, work, files_seen=len(files)), open_it()
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("reading agent logs"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("ingest", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run(target, db_url, work, files_seen=len(files), progress=progress), open_it()


# -- the table -------------------------------------------------------------------


def _num(n: int) -> str:
    if n >= 10_000_000_000:
        return f"{n / 1e9:.0f}G"
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}G"
    if n >= 10_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _ratio(t: Totals) -> str:
    r = t.cache_hit_ratio
    return f"{r * 100:.0f}%" if r is not None else "-"


def _short_model(model: str) -> str:
    """claude-sonnet-4-5-20250929 -> sonnet-4-5: the table stays readable at 80 columns."""
    head, _, tail = model.rpartition("-")
    name = head if len(tail) == 8 and tail.isdigit() else model
    return name.removeprefix("claude-")


def _label(report: UsageReport, row: PeriodRow) -> str:
    if report.period == "blocks":
        from datetime import datetime

        from loopmeter.analytics.usage import resolve_tz

        start = datetime.fromisoformat(row.label).astimezone(resolve_tz(report.timezone))
        return start.strftime("%m-%d %H:%M") + (" *" if row.active else "")
    if report.period == "session":
        return row.label[:8]
    return row.label


def _print_table(report: UsageReport, breakdown: bool) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from loopmeter.reports.fmt import money

    console = Console(highlight=False)
    first = {"daily": "Date", "weekly": "Week of", "monthly": "Month", "session": "Session", "blocks": "Block"}
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0), show_footer=True)
    table.add_column(first[report.period], footer="Total", no_wrap=True)
    for name in ("Input", "Output", "Reason", "C.Write", "C.Read"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Hit", justify="right", no_wrap=True)
    table.add_column("Cost", justify="right", max_width=14)
    table.add_column("Models", min_width=17, overflow="fold", ratio=1)
    t = report.totals
    for col, val in zip(table.columns[1:], [t.input_tokens, t.output_tokens, t.reasoning_tokens,
                                             t.cache_write_tokens, t.cache_read_tokens], strict=False):
        col.footer = _num(val)
    table.columns[6].footer = _ratio(t)
    table.columns[7].footer = money(t.cost_usd, t.unpriced_calls)
    for row in report.rows:
        r = row.totals
        models = ", ".join(dict.fromkeys(_short_model(m) for m in row.models))
        if report.period == "session" and row.project:
            models = f"{Path(row.project).name}: {models}"
        table.add_row(_label(report, row), _num(r.input_tokens), _num(r.output_tokens), _num(r.reasoning_tokens),
                      _num(r.cache_write_tokens), _num(r.cache_read_tokens), _ratio(r), money(r.cost_usd, r.unpriced_calls),
                      "" if breakdown else models)
        if breakdown:
            for (model, source), b in sorted(row.breakdown.items()):
                bt = b.totals
                table.add_row("", _num(bt.input_tokens), _num(bt.output_tokens), _num(bt.reasoning_tokens),
                              _num(bt.cache_write_tokens), _num(bt.cache_read_tokens), _ratio(bt),
                              money(bt.cost_usd, bt.unpriced_calls),
                              f"{_short_model(model)} ({source.removesuffix('-log')})", style="dim")
    if not report.rows:
        console.print("no usage in this range (try without --since/--until/--source, or check `loopmeter doctor`)")
        return
    console.print(table)
    active = [row for row in report.rows if row.active and row.burn]
    for row in active:
        burn = row.burn or {}
        cost = f", {money(burn['cost_per_hour'])}/h" if burn.get("cost_per_hour") is not None else ""
        console.print(f"active block: {burn['tokens_per_minute']:,.0f} tokens/min{cost}; "
                      f"{burn['remaining_minutes']:.0f} min left, projected {_num(burn['projected_tokens'])} tokens")
    console.print(f"[dim]times in {report.timezone}; input excludes cache; Hit = cache read / all input[/dim]")
