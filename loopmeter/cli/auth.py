"""`loopmeter auth`: keep provider API keys in the OS keyring, never in files or the store."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from loopmeter.errors import LoopmeterError

app = typer.Typer(help="Store provider API keys in the OS keyring.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="auth")


def _require_keyring(provider: str) -> None:
    from loopmeter.secrets import env_var, keyring_usable

    var = env_var(provider)
    ok, why = keyring_usable()
    if not ok:
        raise LoopmeterError(
            f"cannot store the key: {why}",
            hint=f"set the environment variable {var} instead (e.g. in your shell profile or CI secrets)",
        )


@app.command("set")
def set_key(
    provider: Annotated[str, typer.Argument(help="anthropic, openai, gemini, cursor, ...")],
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the key from standard input.")] = False,
) -> None:
    """Store PROVIDER's API key (asked for without echo, or read from --stdin)."""
    import keyring

    from loopmeter.secrets import SERVICE

    _require_keyring(provider)
    if stdin or not sys.stdin.isatty():
        value = sys.stdin.readline().strip()
    else:
        value = typer.prompt(f"{provider} API key", hide_input=True).strip()
    if not value:
        raise LoopmeterError("no key given", hint="paste the key at the prompt, or pipe it with --stdin")
    keyring.set_password(SERVICE, provider.lower(), value)
    typer.echo(f"stored the {provider.lower()} key in the keyring ({len(value)} characters)")


@app.command("list")
def list_keys(json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Which providers have a key, and where it comes from (never the value)."""
    from loopmeter.secrets import keyring_usable, status

    ok, why = keyring_usable()
    rows = status(use_keyring=ok)
    if json_out:
        typer.echo(json.dumps({"keyring": why if ok else None, "keys": [r.__dict__ for r in rows]}, indent=2))
        return
    if not ok:
        typer.echo(f"keyring: unavailable ({why}); keys come from environment variables only")
    for r in rows:
        mark = f"present ({r.where})" if r.present else "missing"
        typer.echo(f"{r.provider:<12} {r.env_var:<22} {mark}")


@app.command("delete")
def delete_key(provider: Annotated[str, typer.Argument(help="The provider whose key to remove.")]) -> None:
    """Remove PROVIDER's key from the keyring."""
    import keyring
    from keyring.errors import PasswordDeleteError

    from loopmeter.secrets import SERVICE

    _require_keyring(provider)
    try:
        keyring.delete_password(SERVICE, provider.lower())
    except PasswordDeleteError:
        raise LoopmeterError(f"no {provider.lower()} key in the keyring", hint="loopmeter auth list") from None
    typer.echo(f"deleted the {provider.lower()} key from the keyring")
