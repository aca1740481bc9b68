"""`loopmeter apply RUN`: merge the winning attempt into the current branch as one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(root: typer.Typer) -> None:
    root.command("apply")(apply)


def apply(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run id (or a unique prefix).")],
    attempt: Annotated[str | None, typer.Option("--attempt", help="Apply this attempt instead of the winner.")]
    = None,
) -> None:
    """Merge RUN's winner (or --attempt) as ONE commit with a `Loopmeter-Run: <id>` trailer."""
    from loopmeter.agents.apply import apply_attempt
    from loopmeter.store import default_store

    sha, branch = apply_attempt(default_store(), run_id, attempt, cwd=Path.cwd())
    typer.echo(f"applied {branch} as {sha[:12]}")
    typer.echo(f"the run's worktrees stay for a look; `loopmeter runs clean {run_id}` removes them", err=True)

