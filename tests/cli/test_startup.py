"""What keeps the CLI quick to start: no heavy library at import or for help, and every command's
help still there and readable. Speed itself is measured by benchmarks/startup.py."""

import importlib
import json
import os
import pkgutil
import subprocess
import sys

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import loopmeter.cli
from loopmeter.cli import app
from tests.conftest import loopmeter_cmd

HEAVY = ["litellm", "langgraph", "textual", "pandas", "sqlmodel", "sqlalchemy", "httpx", "rich.markdown", "ray",
         "markdown_it", "opentelemetry.sdk", "git"]


def registered_paths() -> list[list[str]]:
    """Every command and group the cli modules register, found without the root: each module's
    `register` on an app of its own, built eagerly."""
    paths = []

    def walk(command, path):
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    for info in pkgutil.iter_modules(loopmeter.cli.__path__):
        register = getattr(importlib.import_module(f"loopmeter.cli.{info.name}"), "register", None)
        if register is not None:
            module_app = typer.Typer()
            register(module_app)
            for name, command in typer.main.get_group(module_app).commands.items():
                walk(command, [name])
    return sorted(paths)


PATHS = registered_paths()


def loaded_heavy(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    return [name for name in HEAVY if name in modules]


def test_importing_the_cli_loads_no_heavy_library():
    assert loaded_heavy("import json, sys\nimport loopmeter.cli") == []


def test_help_of_every_command_loads_no_heavy_library():
    code = ("import json, sys\n"
            "from loopmeter.cli import app\n"
            "from loopmeter.cli._errors import run_app\n"
            f"for path in {[[*p, '--help'] for p in [[], *PATHS]]!r}:\n"
            "    sys.argv = ['loopmeter', *path]\n"
            "    assert run_app(app) == 0, path\n")
    assert loaded_heavy(code) == []


def test_the_root_lists_every_registered_command():
    runner_out = CliRunner().invoke(app, ["--help"]).output
    listed = runner_out.split("Commands:", 1)[1].split()
    assert {p[0] for p in PATHS} <= set(listed)


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_every_command_help_exits_zero(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: loopmeter {' '.join(path)} ")


def help_in_terminal(path: list[str], columns: int) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(loopmeter_cmd(*path, "--help"), env=env, capture_output=True, text=True, timeout=60,
                          check=True).stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_command_lists_show_each_summary_whole_in_the_terminal_width(columns):
    """click would cut a summary to one line ending in '...'; ours wrap, as typer's rich help did."""
    for group in ([], ["eval"], ["runs"]):
        listing = help_in_terminal(group, columns).split("Commands:", 1)[1]
        assert max(len(line) for line in listing.splitlines()) <= columns
        built = typer.main.get_command(app)
        for name in group:
            built = built.get_command(None, name)
        for name in built.list_commands(None):
            summary = built.get_command(None, name).help.split("\n\n")[0]
            assert "".join(summary.split()) in "".join(listing.split()), (group, name)


def test_a_wide_terminal_gets_wide_help():
    narrow, wide = (help_in_terminal(["eval"], columns) for columns in (80, 120))
    assert max(map(len, narrow.splitlines())) <= 80 < max(map(len, wide.splitlines())) <= 120


def test_a_mistyped_command_gets_a_suggestion():
    result = CliRunner().invoke(app, ["usge"])
    assert result.exit_code == 2
    assert "No such command 'usge'. Did you mean 'usage'?" in result.output
