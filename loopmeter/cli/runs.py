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
                                           "ended_at, agents, winner, cost_usd, unpriced_calls.")] = False,
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

    from loopmeter.reports.fmt import money

    table = Table()
    for col in ("run", "kind", "status", "started", "agents", "winner", "cost", "task"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["kind"], r["status"], str(r["started_at"] or "")[:19], ", ".join(r["agents"]),
                      (r["winner"] or "-").rsplit("-", 1)[-1], money(r["cost_usd"], r["unpriced_calls"]),
                      (r["task"] or "")[:50])
    Console().print(table)


@app.command("clean")
def clean(
    run_ids: Annotated[list[str] | None, typer.Argument(
        metavar="[ID]...", help="Runs to clean (ids or unique prefixes); default: every finished run.")] = None,
    older_than: Annotated[float | None, typer.Option(
        "--older-than", metavar="DAYS", help="Only runs that ended more than DAYS days ago.")] = None,
    branches: Annotated[bool, typer.Option(
        "--branches", help="Also delete the attempts' branches (`apply` then has nothing to merge).")] = False,
    repos: Annotated[bool, typer.Option(
        "--repos", help="Also delete the repositories loopmeter made from task directories.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Also remove worktrees with changes of their own or a `git worktree lock`.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be removed; remove nothing.")
                       ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON list, one object per run.")] = False,
) -> None:
    """Remove the worktrees finished runs left on disk; every record stays in the store."""
    from loopmeter.agents.clean import clean_runs
    from loopmeter.config import load_settings
    from loopmeter.store import default_store

    done = clean_runs(default_store(), load_settings(), run_ids or None, older_than_days=older_than,
                      branches=branches, repos=repos, force=force, dry_run=dry_run)
    if json_out:
        typer.echo(json.dumps([d.as_dict() for d in done], indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    total = 0
    for d in done:
        if d.skipped:
            if run_ids:
                typer.echo(f"{d.run_id}: skipped ({d.skipped})")
            continue
        for k in d.kept:
            typer.echo(f"{d.run_id}: kept {k}")
        for e in d.errors:
            typer.echo(f"{d.run_id}: {e}", err=True)
        if not (d.worktrees or d.branches or d.repo):
            continue
        total += d.bytes
        parts = [f"{len(d.worktrees)} worktree{'s' if len(d.worktrees) != 1 else ''}"]
        if d.branches:
            parts.append(f"{len(d.branches)} branch{'es' if len(d.branches) != 1 else ''}")
        if d.repo:
            parts.append("its task repository")
        typer.echo(f"{d.run_id}: {verb} {', '.join(parts)} ({_mb(d.bytes)})")
    cleaned = sum(1 for d in done if d.worktrees or d.branches or d.repo)
    typer.echo(f"{verb} {_mb(total)} from {cleaned} run{'s' if cleaned != 1 else ''}" if cleaned
               else "nothing to clean")
    if any(d.errors for d in done):
        raise typer.Exit(1)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="Run id (or a unique prefix).")],
    json_out: Annotated[bool, typer.Option("--json", help="The run object with attempt detail, "
                                           "iteration_table and usage per attempt.")] = False,
) -> None:
    """One run: attempts, iterations with check output tails, usage, diffstat, stop reasons."""
    from loopmeter.agents.runs import run_object
    from loopmeter.analytics.work import iterations_done, work_cost
    from loopmeter.reports.fmt import money
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
        calls = len(a["usage"])
        cost = money(work_cost(a["cost_usd"], a["unpriced_calls"]), a["unpriced_calls"]) \
            + ("" if calls else " (no model calls)")
        name = a["agent"] + (f":{a['model']}" if a["model"] else "")
        typer.echo(f"\n== {a['id']} {name} [{a['role']}] {a['status']}: {a['stop_reason'] or ''}")
        typer.echo(f"   iterations {iterations_done(a['iterations'], len(a['iteration_table']))}  tokens in "
                   f"{a['input_tokens']} cache-read {a['cache_read_tokens']} cache-write {a['cache_write_tokens']} "
                   f"out {a['output_tokens']}  cost {cost}  wall {a['wall_s'] or 0:.1f}s  "
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
        typer.echo(f"   model calls: {calls}")
