"""The `loopmeter` command. The root only mounts sub-apps: every module in this
package exposes `register(app)`, and adds its own named commands or command group.

Nothing heavy is imported here or at module level in the sub-apps: litellm,
langgraph, textual, pandas and sqlmodel load inside the commands that use them.
Start-up stays short in two more ways (numbers in benchmarks/startup.py):

- help is click's plain text, not typer's rich panels: those import rich's
  markdown, syntax and traceback modules on every `--help` and usage error;
- each module's commands become click commands (signatures read, options built)
  only when one of them is run, asked for help, or listed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from loopmeter import __version__


@dataclass(frozen=True)
class _Mounted:
    module_app: typer.Typer  # the app its module registered it on
    summary: str  # the first paragraph of its help, read from the registration


_MOUNTED: dict[str, _Mounted] = {}  # command name -> where it is and what it does


class _Commands(Mapping[str, Any]):
    """Command name -> click command, built from its module's app on first lookup."""

    def __iter__(self) -> Iterator[str]:
        return iter(_MOUNTED)

    def __len__(self) -> int:
        return len(_MOUNTED)

    def __getitem__(self, name: str) -> Any:
        return _build(_MOUNTED[name].module_app).commands[name]


@functools.cache
def _build(module_app: typer.Typer) -> TyperGroup:
    group = typer.main.get_group(module_app)
    for command in group.commands.values():
        _summarise(command)
    return group


def _summarise(command: Any) -> None:
    """List commands with the whole first paragraph of their help, wrapped, as
    typer's rich help did; click would cut it to one line ending in '...'."""
    if command.help and not command.short_help:
        command.short_help = command.help.split("\n\n")[0]
    for sub in getattr(command, "commands", {}).values():
        _summarise(sub)


class _RootGroup(TyperGroup):
    """Builds a command when it is looked up, and lists them all without building any."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands()  # type: ignore[assignment]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, mounted.summary) for name, mounted in _MOUNTED.items()])


app = typer.Typer(
    name="loopmeter",
    cls=_RootGroup,
    help="Run coding agents in loops inside sandboxes, and measure what they are worth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
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
        if register is None:
            continue
        module_app = typer.Typer(rich_markup_mode=None)
        register(module_app)
        helps = [(c.name, c.help or inspect.getdoc(c.callback)) for c in module_app.registered_commands]
        helps += [(g.name, typer.main.solve_typer_info_help(g)) for g in module_app.registered_groups]
        for name, text in helps:
            if not isinstance(name, str):
                raise RuntimeError(f"{module.__name__}.register: name every command and group")
            _MOUNTED[name] = _Mounted(module_app, inspect.cleandoc(text or "").split("\n\n")[0])


_mount()


def main() -> None:
    """Console entry point: people get one line and a hint, not a traceback."""
    from loopmeter.cli._errors import run_app

    sys.exit(run_app(app))
