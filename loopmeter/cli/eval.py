"""`loopmeter eval`: run a suite against agents or models, and report with honest statistics.

`--json` shapes (stable, documented in docs/evals.md):
  eval run / report:  {"run_id", "suite", "configs": [...], "comparisons": [...], ...}
  eval compare:       {"run_a", "run_b", "paired", "configs": [...], "comparisons": [...]}
  eval list:          [{"run_id", "suite", "status", "configs", "epochs", "cells_done", "started_at", "ended_at"}]
  eval validate:      [{"task_id", "ok", "solution_passes", "bare_fails", "solution_s", "bare_s"}]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from loopmeter.errors import LoopmeterError
from loopmeter.vocab import RunStatus

app = typer.Typer(help="Evals: run a gold suite against agents or models and compare them.", no_args_is_help=True)

FORMATS = ("text", "md", "json", "html")
EXECUTOR_HELP = "Where cells run: local (threads here) or ray (a Ray cluster; needs loopmeter[ray])."
RAY_ADDRESS_HELP = "The Ray cluster for --executor ray: HOST:PORT (else RAY_ADDRESS), or auto to start one here."


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")


def _progress(json_out: bool) -> Any:
    """One line per finished cell on a TTY; nothing on a pipe."""
    if json_out or not sys.stderr.isatty():
        return None

    from loopmeter.safe_text import printable

    def show(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            typer.echo(f"eval {event['run_id']}: {event['todo']} cell(s) to run"
                       + (f", {event['already']} already done" if event["already"] else ""), err=True)
        elif event["event"] == "cell":
            mark = "pass" if event["passed"] else ("ERR " if event["error_kind"] else "fail")
            where = f" on {printable(event['node'], 80)}" if event.get("node") else ""
            typer.echo(f"[{event['done']}/{event['total']}] {mark} {event['config']} {event['task_id']}"
                       f" (epoch {event['epoch']}){where}", err=True)

    return show


def _emit(summary: dict[str, Any], fmt: str, output: Path | None = None) -> None:
    from loopmeter.evals import render

    if fmt not in FORMATS:
        raise LoopmeterError(f"unknown format '{fmt}'", hint="formats: " + ", ".join(FORMATS))
    text = {"json": lambda s: json.dumps(s, indent=2) + "\n", "md": render.to_markdown,
            "html": render.to_html, "text": render.to_text}[fmt](summary)
    if output is not None:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text, nl=False)


def _finish(outcome: Any, store: Any, json_out: bool, started_wall: float) -> None:
    import time

    from loopmeter.evals.report import summarize_run

    summary = summarize_run(store, outcome.run_id)
    summary["wall_s"] = round(time.monotonic() - started_wall, 2)
    _emit(summary, "json" if json_out else "text")
    if not json_out:
        typer.echo(f"run {outcome.run_id}: {outcome.status}, {outcome.ran} cell(s) run in {outcome.wall_s:.1f}s"
                   + (f", {outcome.already} from before" if outcome.already else ""))
    if outcome.status == RunStatus.CANCELLED:
        raise typer.Exit(130)
    if outcome.status == RunStatus.BUDGET:
        typer.echo(f"stopped: --max-usd spent; `loopmeter eval resume {outcome.run_id} --max-usd X` continues",
                   err=True)
        raise typer.Exit(1)


@app.command("run")
def run_cmd(
    suite: Annotated[str, typer.Argument(metavar="SUITE", help="`gold`, `model-arith`, a directory of tasks, or a suite.toml.")] = "",
    agent: Annotated[list[str] | None, typer.Option("--agent", "-a", help=(
        "A configuration to test, repeatable: NAME[:MODEL] (e.g. oracle, claude-code, builtin:openai/gpt-4o-mini);"
        " for model suites a litellm model name."))] = None,
    epochs: Annotated[int, typer.Option(help="Attempts per (configuration, task).")] = 1,
    concurrency: Annotated[int, typer.Option(help="Cells run at the same time.")] = 2,
    max_usd: Annotated[float | None, typer.Option(help="Stop starting cells once the eval has spent this.")] = None,
    policy: Annotated[str, typer.Option(help="Sandbox policy: default, strict, data-restricted, or a YAML file.")]
    = "default",
    sandbox: Annotated[str, typer.Option(help="bwrap (default) or none (unsandboxed, audited).")] = "bwrap",
    max_iters: Annotated[int, typer.Option(help="Loop iterations per coding attempt.")] = 5,
    api_base: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint for models (e.g. a local server).")]
    = None,
    keep_worktrees: Annotated[bool, typer.Option(help="Keep each attempt's scratch repo and worktree.")] = False,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue eval RUN (same as `eval resume RUN`).")]
    = None,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON summary (stable keys).")] = False,
) -> None:
    """Run every (configuration, task, epoch) of SUITE through the agent loop and sandbox, then summarise."""
    import time

    from loopmeter.evals.runner import EvalOptions, resume_eval, start_eval
    from loopmeter.store import default_store

    started = time.monotonic()
    store = default_store()
    if resume:
        outcome = resume_eval(resume, store=store, concurrency=concurrency, max_usd=max_usd,
                              on_event=_progress(json_out), executor=executor, ray_address=ray_address)
        _finish(outcome, store, json_out, started)
        return
    if not suite:
        raise LoopmeterError("no suite given", hint="e.g. loopmeter eval run gold --agent oracle --agent nop")
    if sandbox not in ("bwrap", "none"):
        raise LoopmeterError(f"unknown sandbox '{sandbox}'", hint="--sandbox bwrap or --sandbox none")
    options = EvalOptions(epochs=epochs, concurrency=concurrency, max_usd=max_usd, policy=policy, sandbox=sandbox,
                          api_base=api_base, max_iters=max_iters, keep_worktrees=keep_worktrees)
    outcome = start_eval(suite, list(agent or []), options, store=store, on_event=_progress(json_out),
                         executor=executor, ray_address=ray_address)
    _finish(outcome, store, json_out, started)


@app.command("resume")
def resume_cmd(
    run_id: Annotated[str, typer.Argument(help="The eval run to continue.")],
    concurrency: Annotated[int | None, typer.Option(help="Cells run at the same time.")] = None,
    max_usd: Annotated[float | None, typer.Option(help="A new spending cap for the whole eval.")] = None,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON summary (stable keys).")] = False,
) -> None:
    """Run the cells of an interrupted eval that have no result yet."""
    import time

    from loopmeter.evals.runner import resume_eval
    from loopmeter.store import default_store

    started = time.monotonic()
    store = default_store()
    outcome = resume_eval(run_id, store=store, concurrency=concurrency, max_usd=max_usd,
                          on_event=_progress(json_out), executor=executor, ray_address=ray_address)
    _finish(outcome, store, json_out, started)


@app.command("status")
def status_cmd(
    run_id: Annotated[str, typer.Argument(help="An eval run (a unique prefix is enough).")],
    json_out: Annotated[bool, typer.Option("--json", help="JSON (stable keys).")] = False,
) -> None:
    """Cells of an eval: pending, running (and on which node), done and failed."""
    from loopmeter.evals.status import eval_status
    from loopmeter.safe_text import printable
    from loopmeter.store import default_store

    st = eval_status(default_store(), run_id)
    if json_out:
        typer.echo(json.dumps(st, indent=2))
        return
    typer.echo(f"eval {st['run_id']} ({st['suite']}, {st['status']}): {st['total']} cells: {st['pending']} pending, "
               f"{len(st['running'])} running, {st['done']} done ({st['passed']} passed), {st['failed']} failed "
               f"({st['errors']} errors)")
    for cell in st["running"]:
        typer.echo(f"  running {printable(cell['config'], 80)} {printable(cell['task_id'], 120)} "
                   f"(epoch {cell['epoch']}) on {printable(cell['node'] or '?', 80)}  child run {cell['child_run']}")


@app.command("report")
def report_cmd(
    run_id: Annotated[str, typer.Argument(help="An eval run (or any run: its attempts are compared).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, md, json or html.")] = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    seed: Annotated[int | None, typer.Option(help="Bootstrap seed (default fixed, so reports are reproducible).")]
    = None,
) -> None:
    """Pass rates with 95% intervals, pass@k, time, tokens, cost per solved task, and paired comparisons."""
    from loopmeter.evals import stats
    from loopmeter.evals.report import summarize_run
    from loopmeter.store import default_store

    summary = summarize_run(default_store(), run_id, seed=stats.DEFAULT_SEED if seed is None else seed)
    _emit(summary, "json" if json_out else fmt, output)


@app.command("compare")
def compare_cmd(
    run_a: Annotated[str | None, typer.Argument(help="First run (A).")] = None,
    run_b: Annotated[str | None, typer.Argument(help="Second run (B); B − A is reported.")] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help=(
        "Compare primary vs shadow attempts across runs made with `run --shadow` (the given runs, or all)."))]
    = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, md, json or html.")] = "text",
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Compare two runs: paired over tasks when their task sets match, otherwise unpaired (and it says so)."""
    from loopmeter.evals.report import compare_runs, compare_shadow
    from loopmeter.store import default_store

    store = default_store()
    if shadow:
        summary = compare_shadow(store, [r for r in (run_a, run_b) if r] or None)
    elif run_a and run_b:
        summary = compare_runs(store, run_a, run_b)
    else:
        raise LoopmeterError("compare needs two runs", hint="loopmeter eval compare RUN_A RUN_B, or --shadow")
    _emit(summary, "json" if json_out else fmt)


@app.command("list")
def list_cmd(
    limit: Annotated[int, typer.Option(help="How many of the latest eval runs.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="JSON list (stable keys).")] = False,
) -> None:
    """Eval runs, newest first."""
    from loopmeter.evals.report import list_evals
    from loopmeter.store import default_store

    rows = list_evals(default_store(), limit)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no eval runs yet: loopmeter eval run gold --agent oracle --agent nop")
        return
    for r in rows:
        typer.echo(f"{r['run_id']}  {r['started_at'] or '':25.25}  {r['status']:<10} {r['suite'] or '?':<14} "
                   f"{r['cells_done']:>4} cells  {', '.join(r['configs'])}")


@app.command("validate")
def validate_cmd(
    suite: Annotated[str, typer.Argument(help="`gold`, a directory of tasks, or a suite.toml.")] = "gold",
    sandbox: Annotated[str, typer.Option(help="bwrap (default), or none: unsandboxed, warned about and audited "
                                              "for every command.")] = "bwrap",
    policy: Annotated[str, typer.Option(help="Sandbox policy for tasks without their own: default, strict, "
                                             "or a YAML file.")] = "default",
    json_out: Annotated[bool, typer.Option("--json", help="JSON list (stable keys).")] = False,
) -> None:
    """Check every coding task without an agent: its solution passes the check, the bare repo fails it.

    Checks run like every other check: in the sandbox, role "check", no API keys."""
    from loopmeter.config import load_settings
    from loopmeter.evals.suite import load_suite
    from loopmeter.evals.validate import default_check, validate_task
    from loopmeter.policies.audit import AuditLog
    from loopmeter.sandbox import make_runner
    from loopmeter.store import open_store

    if sandbox not in ("bwrap", "none"):
        raise LoopmeterError(f"unknown sandbox '{sandbox}'", hint="--sandbox bwrap or --sandbox none")
    loaded = load_suite(suite)
    settings = load_settings()
    store = open_store(settings.db_url)
    runner = make_runner(sandbox, store=store,
                         audit=AuditLog(store, settings.audit_anchor, settings.audit_anchor_copy))
    try:
        results = [validate_task(t, default_check(t, policy, runner)) for t in loaded.tasks if t.kind == "repo"]
    finally:
        store.dispose()
    rows = [{"task_id": v.task_id, "ok": v.ok, "solution_passes": v.solution_passes, "bare_fails": v.bare_fails,
             "solution_s": round(v.solution_s, 3), "bare_s": round(v.bare_s, 3)} for v in results]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for v in results:
            typer.echo(f"{'ok  ' if v.ok else 'FAIL'} {v.task_id:<32} solution {'passes' if v.solution_passes else 'FAILS'}"
                       f", bare repo {'fails' if v.bare_fails else 'PASSES'} ({v.solution_s:.2f}s)")
            if not v.ok and v.output.strip():
                typer.echo(f"     {v.output.strip().splitlines()[-1][:300]}")
        for task, why in loaded.skipped:
            typer.echo(f"skip {task:<32} {why}")
    if not all(v.ok for v in results):
        raise typer.Exit(1)
