"""`loopmeter policy`: list, show, lint and diff sandbox policies.

`policy list --json`: `[{name, description, path, sha256, network_allow, secrets}]`;
`policy show --json`: `{name, path, sha256, policy}`; `policy diff --json`: `[{field, a, b}]`;
`policy lint --json`: `[{file, name, sha256, ok, errors: [{code, line, field, message, hint}], warnings: [...]}]`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

app = typer.Typer(help="List, show, lint and compare sandbox policies.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="policy")


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """The shipped presets."""
    from loopmeter.policies import list_presets, load_policy

    rows: list[dict[str, Any]] = []
    for name in list_presets():
        p = load_policy(name)
        rows.append({"name": p.name, "description": p.model.description, "path": str(p.path), "sha256": p.sha256,
                     "network_allow": len(p.model.network.allow), "secrets": sorted(p.model.secrets)})
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['name']:<16} {r['sha256'][:12]}  hosts={r['network_allow']:<3} {r['description']}")


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="Preset name or YAML file.")],
         json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Print a policy (the file as written, plus its sha256)."""
    from loopmeter.policies import load_policy

    p = load_policy(ref)
    if json_out:
        typer.echo(json.dumps({"name": p.name, "path": str(p.path), "sha256": p.sha256,
                               "policy": p.model.model_dump()}, indent=2))
        return
    typer.echo(f"# {p.path}\n# sha256 {p.sha256}")
    from loopmeter.policies.loader import read_policy_text

    text, _ = read_policy_text(p.path)
    # a policy can come from a repository: no raw control characters reach the terminal
    typer.echo("".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text.rstrip()))


@app.command("lint")
def lint(files: Annotated[list[str], typer.Argument(help="Policy files (or preset names).")],
         json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
         strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when there are warnings.")] = False) -> None:
    """Check policy files: errors (the file does not load) and warnings (it is too wide), each as
    FILE:LINE: field: what. Exit 2 on any error; else 1 with --strict when there are warnings; else 0."""
    from loopmeter.policies.lint import lint_policy_file

    results = [lint_policy_file(f) for f in files]
    if json_out:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            for e in r.errors:
                where = f"{e.file}:{e.line}" if e.line is not None else e.file
                typer.echo(f"error: {where}: {e.field + ': ' if e.field else ''}{e.message}", err=True)
                if e.hint:
                    typer.echo(f"hint: {e.hint}", err=True)
            for w in r.warnings:
                typer.echo(w.text())
            if not r.errors:
                note = f", {len(r.warnings)} warning{'s' if len(r.warnings) != 1 else ''}" if r.warnings else ""
                typer.echo(f"ok  {r.file}  ({r.name}, sha256 {(r.sha256 or '')[:12]}{note})")
    if any(r.errors for r in results):
        raise typer.Exit(2)
    if strict and any(r.warnings for r in results):
        raise typer.Exit(1)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = data
    return out


@app.command("diff")
def diff(a: Annotated[str, typer.Argument(help="First policy.")], b: Annotated[str, typer.Argument(help="Second policy.")],
         json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """What differs between two policies, field by field."""
    from loopmeter.policies import load_policy

    pa, pb = load_policy(a), load_policy(b)
    fa, fb = _flatten(pa.model.model_dump()), _flatten(pb.model.model_dump())
    rows = [{"field": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"--- {pa.name} ({pa.path})\n+++ {pb.name} ({pb.path})")
    for r in rows:
        if isinstance(r["a"], list) and isinstance(r["b"], list):
            gone = [x for x in r["a"] if x not in r["b"]]
            new = [x for x in r["b"] if x not in r["a"]]
            typer.echo(f"{r['field']}:" + "".join(f"\n  - {x}" for x in gone) + "".join(f"\n  + {x}" for x in new))
        else:
            typer.echo(f"{r['field']}:\n  - {r['a']!r}\n  + {r['b']!r}")
    if not rows:
        typer.echo("(no differences)")


@app.command("suggest")
def suggest(run: Annotated[str, typer.Argument(help="Run id (or the sandbox id of a `sandbox exec`).")],
            policy: Annotated[str | None, typer.Option("--policy", help="The policy to compare with (default: "
                                                                        "the one the run used).")] = None,
            json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """The smallest policy change that would have allowed what RUN was denied, with a warning for each
    widening. Prints a YAML fragment and a diff; never changes a file."""
    from loopmeter.config import load_settings
    from loopmeter.policies.denials import run_denials
    from loopmeter.policies.suggest import policy_for_run, render_text
    from loopmeter.policies.suggest import suggest as make_suggestion
    from loopmeter.store import open_store

    store = open_store(load_settings().db_url)
    try:
        groups = run_denials(store, run)
        result = make_suggestion(policy_for_run(store, run, groups, policy), groups, run)
    finally:
        store.dispose()
    typer.echo(json.dumps(result.as_dict(), indent=2) if json_out else render_text(result).rstrip())
