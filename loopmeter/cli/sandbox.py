"""`loopmeter sandbox`: run a command in the policy's sandbox, and self-test the sandbox.

`sandbox doctor --json` keys: `runner {runner, found, path, version, userns, usable, error, hint}`,
`checks [{name, denial, control, ok}]`, `ok`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Run commands in the policy's sandbox; self-test the sandbox.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="sandbox")


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    command: Annotated[list[str], typer.Argument(help="The command to run, after --.")],
    policy: Annotated[str | None, typer.Option("--policy", help="Preset name or policy YAML file.")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Writable working directory (default: .).")] = None,
    sandbox: Annotated[str | None, typer.Option("--sandbox", help="bwrap (default) or none (unsandboxed, audited).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Wall-clock limit in seconds.")] = None,
    allow: Annotated[list[str] | None, typer.Option("--allow", help="Let host:port through the egress proxy.")] = None,
    ro: Annotated[list[Path] | None, typer.Option("--ro", help="Extra read-only directory (the datasets, "
                                                                "under data-restricted: every open is audited).")] = None,
) -> None:
    """Run CMD in the sandbox. Exit code = the command's; 124 timeout; 125 sandbox could not start."""
    from loopmeter.config import load_settings
    from loopmeter.policies import load_policy
    from loopmeter.safe_text import printable
    from loopmeter.sandbox import make_runner
    from loopmeter.store import open_store

    settings = load_settings()
    pol = load_policy(policy or settings.policy)
    kind = sandbox or settings.sandbox
    store = open_store(settings.db_url)
    from loopmeter.policies.audit import AuditLog
    from loopmeter.sandbox.errors import SandboxUnavailable

    try:
        runner = make_runner(kind, store=store, audit=AuditLog(store, settings.audit_anchor, settings.audit_anchor_copy))
    except SandboxUnavailable as exc:
        exc.exit_code = 125  # `sandbox exec` keeps the command's exit code space: 125 = could not start
        raise
    cwd = (workdir or Path.cwd()).resolve()
    if not cwd.is_dir():
        from loopmeter.errors import LoopmeterError

        raise LoopmeterError(f"--workdir {cwd} is not a directory")

    def show(stream: str, line: str) -> None:
        out = sys.stdout if stream == "stdout" else sys.stderr
        out.write(line + "\n")
        out.flush()

    res = runner.run(list(command), workdir=cwd, policy=pol, role="check", actor="user", timeout_s=timeout,
                     extra_allow=allow or (), extra_ro_binds=ro or (), on_output=show)
    if res.denials:
        sys.stderr.write(f"loopmeter: {len(res.denials)} denied by policy {pol.name}:\n")
        for d in res.denials:
            sys.stderr.write(f"  {d['layer']} {d['action']} {printable(d['target'], 300)}: "
                             f"{printable(d['reason'], 300)} ({d['rule_id']})\n")
    if res.timed_out:
        sys.stderr.write(f"loopmeter: killed at the wall-clock limit after {res.wall_s:.1f}s\n")
    store.dispose()
    raise typer.Exit(res.exit_code)


@app.command("doctor")
def doctor(json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Self-test the sandbox: each denial beside a positive control. Exit 1 if any check fails."""
    from loopmeter.config import load_settings
    from loopmeter.policies.audit import AuditLog, count
    from loopmeter.sandbox import make_runner
    from loopmeter.sandbox.probe import probe_bwrap
    from loopmeter.sandbox.selftest import run_selftest
    from loopmeter.store import open_store

    status = probe_bwrap()
    checks = []
    if status.usable:
        settings = load_settings()
        store = open_store(settings.db_url)
        runner = make_runner("bwrap", store=store,
                             audit=AuditLog(store, settings.audit_anchor, settings.audit_anchor_copy))
        checks = run_selftest(runner, audit_count=lambda: count(store))
        store.dispose()
    ok = status.usable and all(c.ok for c in checks)
    if json_out:
        typer.echo(json.dumps({"runner": status.as_dict(), "checks": [c.as_dict() for c in checks], "ok": ok},
                              indent=2))
    else:
        typer.echo(f"bubblewrap: {status.path or 'not found'} {status.version or ''}  "
                   f"user namespaces: {'yes' if status.userns else 'no'}")
        if not status.usable:
            typer.echo(f"error: {status.error}\nhint: {status.hint}", err=True)
        width = max((len(c.name) for c in checks), default=4)
        for c in checks:
            typer.echo(f"{'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  denied: {c.denial}")
            typer.echo(f"      {'':<{width}}  control: {c.control}")
        typer.echo("sandbox self-test: " + ("all checks passed" if ok else "FAILED"))
    raise typer.Exit(0 if ok else 1)
