"""`loopmeter demo`: agents looped in sandboxes, usage, an A/B verdict, the audit log and
the dashboard — on embedded defaults, with no API key and no network."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)


def demo(
    home: Annotated[Path | None, typer.Option(help="Where the demo keeps its data (default: LOOPMETER_HOME, "
                                              "else a loopmeter-demo folder in your user data dir).")] = None,
    no_ingest: Annotated[bool, typer.Option("--no-ingest", help="Do not read your own agent logs.")] = False,
    sandbox: Annotated[str, typer.Option(help="bwrap (default), or none to run unsandboxed (audited).")] = "bwrap",
    fresh: Annotated[bool, typer.Option("--fresh", help="Remove the demo home's earlier data first.")] = False,
    report_format: Annotated[str, typer.Option("--format", help="Report format when not on a TTY: md or json.")] = "md",
) -> None:
    """Run the whole product once on sample tasks: loop, eval A/B, usage, audit, dashboard."""
    from loopmeter.demo import clean, default_demo_home, has_agent_logs, render_report, run_demo

    target = (home or default_demo_home()).expanduser().resolve()
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    say = (lambda text: typer.echo(text, err=True)) if not tty else typer.echo
    if fresh:
        clean(target)
    say(f"loopmeter demo — data in {target}")
    ingest = False
    if not no_ingest and has_agent_logs():
        ingest = typer.confirm("Your Claude Code / Codex / Gemini logs were found. Add their usage to the demo?",
                               default=True) if tty else True
    started = time.perf_counter()
    result = run_demo(target, sandbox=sandbox, ingest=ingest, say=say)
    say(f"done in {time.perf_counter() - started:.1f}s. Run `loopmeter runs show {result.run_id}` for details.")
    say(f"The demo's data lives in {target}; remove it with: rm -rf {target}")
    if tty:
        from loopmeter.config import load_settings
        from loopmeter.store import open_store
        from loopmeter.tui.app import LoopmeterApp

        typer.echo("Opening the dashboard (q quits, ? shows keys)...")
        settings = load_settings()
        store = open_store(settings.db_url)
        try:
            LoopmeterApp(store, home=settings.home, value=settings.value, range_name="all").run()
        finally:
            store.dispose()
    else:
        typer.echo(render_report(target, report_format))
