"""The `loopmeter` command. The root only mounts sub-apps: every module in this
package exposes `register(app)`, and adds its own commands or command group.

Nothing heavy is imported here or at module level in the sub-apps: litellm,
langgraph, textual, pandas and sqlmodel load inside the commands that use them.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from typing import Annotated

import typer

from loopmeter import __version__

app = typer.Typer(
    name="loopmeter",
    help="Run coding agents in loops inside sandboxes, and measure what they are worth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"loopmeter {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """Run coding agents in loops inside sandboxes, and measure what they are worth."""
    if debug:
        os.environ["LOOPMETER_DEBUG"] = "1"


def _mount() -> None:
    pkg_path = os.path.dirname(__file__)
    for info in sorted(pkgutil.iter_modules([pkg_path]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_mount()


def main() -> None:
    """Console entry point: people get one line and a hint, not a traceback."""
    from loopmeter.cli._errors import run_app

    sys.exit(run_app(app))
