"""`loopmeter runs`: list runs, or show one with its attempts, iterations, usage and diffstat."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="List runs, or show one run in detail.", invoke_without_command=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="runs")


@app.callback()
def runs(ctx: typer.Context,
         json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List runs (newest first); `runs show ID` for one run."""
    if ctx.invoked_subcommand is None:
        list_cmd(json_out=json_out)


@app.command("list")
def list_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="JSON list: id, kind, status, task, started_at, "
                                           "ended_at, agents, winner, cost_usd.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="How many runs.")] = 50,
) -> None:
    """Runs, newest first."""
    from loopmeter.agents.runs import list_runs
    from loopmeter.store import default_store

    rows = list_runs(default_store(), limit=limit)
    if json_out:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo('no runs yet: loopmeter run "TASK" --check "CMD" --agent NAME')
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("run", "kind", "status", "started", "agents", "winner", "cost", "task"):
        table.add_column(col)
    for r in rows:
        cost = "unpriced" if r["cost_usd"] is None else f"${r['cost_usd']:.4f}"
        table.add_row(r["id"], r["kind"], r["status"], str(r["started_at"] or "")[:19], ", ".join(r["agents"]),
                      (r["winner"] or "-").rsplit("-", 1)[-1], cost, (r["task"] or "")[:50])
    Console().print(table)


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="Run id (or a unique prefix).")],
    json_out: Annotated[bool, typer.Option("--json", help="The run object with attempt detail, "
                                           "iteration_table and usage per attempt.")] = False,
) -> None:
    """One run: attempts, iterations with check output tails, usage, diffstat, stop reasons."""
    from loopmeter.agents.runs import run_object
    from loopmeter.store import default_store

    obj = run_object(default_store(), run_id, detail=True)
    if json_out:
        typer.echo(json.dumps(obj, indent=2, default=str))
        return
    typer.echo(f"run {obj['id']} ({obj['kind']}): {obj['status']}   winner: {obj['winner'] or '-'}")
    typer.echo(f"task: {obj['task']}")
    typer.echo(f"repo: {obj['repo']} @ {str(obj['base_commit'])[:12]}   policy: {obj['policy']} "
               f"sha256 {str(obj['policy_sha256'])[:12]}")
    for a in obj["attempts"]:
        cost = "unpriced" if a["cost_usd"] is None else f"${a['cost_usd']:.4f}"
        name = a["agent"] + (f":{a['model']}" if a["model"] else "")
        typer.echo(f"\n== {a['id']} {name} [{a['role']}] {a['status']}: {a['stop_reason'] or ''}")
        typer.echo(f"   iterations {a['iterations']}  tokens in {a['input_tokens']} cache-read "
                   f"{a['cache_read_tokens']} cache-write {a['cache_write_tokens']} out {a['output_tokens']}  "
                   f"cost {cost} ({a['unpriced_calls']} unpriced calls)  wall {a['wall_s'] or 0:.1f}s  "
                   f"green {a['time_to_green_s'] if a['time_to_green_s'] is not None else '-'}")
        d = a["diffstat"] or {}
        typer.echo(f"   branch {a['branch']}  head {str(a['head_commit'] or '-')[:12]}  diff: "
                   f"{d.get('files', 0)} files +{d.get('insertions', 0)} -{d.get('deletions', 0)}"
                   + (f"  applied {a['applied_at']}" if a["applied_at"] else ""))
        for it in a["iteration_table"]:
            verdict = "pass" if it["check_passed"] else ("fail" if it["check_passed"] is False else "-")
            typer.echo(f"   #{it['n']}: act exit {it['act_exit']}  check {verdict} (exit {it['check_exit']})")
            tail = (it["check_output_tail"] or "").strip().splitlines()[-5:]
            for line in tail:
                typer.echo(f"       | {line[:160]}")
        typer.echo(f"   model calls: {len(a['usage'])}")
