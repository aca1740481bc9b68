"""`loopmeter dash`: the Textual dashboard (Overview, Usage, Runs, Evals, Policy)."""

from __future__ import annotations

from typing import Annotated

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
    from loopmeter.store import open_store
    from loopmeter.tui.app import LoopmeterApp

    settings = load_settings()
    store = open_store(settings.db_url)
    filters = Filters(agent=agent, model=model, project=project, user=user, source=source, repo=repo,
                      timezone=settings.timezone or "UTC")
    try:
        LoopmeterApp(store, home=settings.home, value=settings.value, range_name=range_, filters=filters,
                     live_every=refresh).run()
    finally:
        store.dispose()
