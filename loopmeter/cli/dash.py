"""`loopmeter dash`: the Textual dashboard (Overview, Usage, Runs, Evals, Policy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from loopmeter.errors import LoopmeterError


def register(root: typer.Typer) -> None:
    root.command("dash")(dash)


def dash(
    range_: Annotated[str, typer.Option("--range", help="Start with this range: 24h, 7d, 30d, 90d or all.")] = "30d",
    agent: Annotated[str | None, typer.Option(help="Start filtered to this agent.")] = None,
    model: Annotated[str | None, typer.Option(help="Start filtered to this model.")] = None,
    project: Annotated[str | None, typer.Option(help="Start filtered to this project.")] = None,
    user: Annotated[str | None, typer.Option(help="Start filtered to this user.")] = None,
    source: Annotated[str | None, typer.Option(help="Start filtered to this usage source.")] = None,
    repo: Annotated[str | None, typer.Option(help="Start filtered to runs in this repo.")] = None,
    refresh: Annotated[float, typer.Option(help="Seconds between live checks for active runs (0: off).")] = 5.0,
) -> None:
    """Spend, outcomes, runs, evals and the audit log in the terminal. Press ? for keys."""
    from loopmeter.analytics.filters import RANGES, Filters

    if range_ not in RANGES:
        raise LoopmeterError(f"unknown range {range_!r}", hint="one of " + ", ".join(RANGES))
    from loopmeter.config import load_settings

    settings = load_settings()
    app, close = dashboard(settings, range_, Filters(agent=agent, model=model, project=project, user=user,
                                                     source=source, repo=repo, timezone=settings.timezone or "UTC"),
                           refresh)
    try:
        app.run()
    finally:
        close()


def dashboard(settings: Any, range_: str, base: Any, refresh: float) -> tuple[Any, Callable[[], None]]:
    """The app for `settings`' store and the function that releases what it opened. The Overview's
    first figures are computed in a process forked before this one opens the store or imports
    Textual (loopmeter/tui/first.py); benchmarks/dash_first.py starts it the same way."""
    from loopmeter.analytics.filters import range_filters
    from loopmeter.records import utcnow
    from loopmeter.tui.first import FirstFigures

    filters = range_filters(range_, utcnow(), base)
    first = FirstFigures.start(settings.db_url, filters)
    opened: list[Any] = []

    def store() -> Any:  # called by the app on first use, after the first figures show
        from loopmeter.store import open_store

        opened.append(open_store(settings.db_url))
        return opened[0]

    def close() -> None:
        first.close()
        for s in opened:
            s.dispose()

    from loopmeter.tui.app import LoopmeterApp

    return LoopmeterApp(store, home=settings.home, value=settings.value, range_name=range_, live_every=refresh,
                        first=first), close
