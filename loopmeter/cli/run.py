"""`loopmeter run`, `resume`, `approve`, `deny`: one task, several agents, each looping until its check passes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopmeter.errors import LoopmeterError
from loopmeter.vocab import RunStatus

if TYPE_CHECKING:
    from loopmeter.agents.loop import RunResult


EXECUTOR_HELP = "Where attempts run: local (here) or ray (a Ray cluster; needs loopmeter[ray])."
RAY_ADDRESS_HELP = "The Ray cluster for --executor ray: HOST:PORT (else RAY_ADDRESS), or auto to start one here."


def register(root: typer.Typer) -> None:
    root.command("run")(run)
    root.command("resume")(resume)
    root.command("approve")(approve)
    root.command("deny")(deny)


def run(
    task_text: Annotated[str | None, typer.Argument(metavar="TASK", help="What the agents should do.")] = None,
    check: Annotated[str | None, typer.Option("--check", help="Shell command that exits 0 when the task is done.")]
    = None,
    agent: Annotated[list[str] | None, typer.Option("--agent", "-a", help="NAME[:MODEL], repeatable "
                                                     "(e.g. claude-code, builtin:openai/gpt-4o-mini).")] = None,
    task_dir: Annotated[Path | None, typer.Option("--task", help="A task directory (task.toml, repo/, tests/, "
                                                   "solution/).")] = None,
    repo: Annotated[Path | None, typer.Option("--repo", help="The git repository to work on (default: .).")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Policy preset or YAML file.")] = None,
    max_iters: Annotated[int | None, typer.Option("--max-iters", help="Iterations per attempt.")] = None,
    max_usd: Annotated[float | None, typer.Option("--max-usd", help="Dollars per attempt.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Tokens per attempt.")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Wall-clock minutes per attempt.")]
    = None,
    run_max_usd: Annotated[float | None, typer.Option("--run-max-usd", help="Dollars for all attempts together.")]
    = None,
    run_max_minutes: Annotated[float | None, typer.Option("--run-max-minutes", help="Minutes for the whole run.")]
    = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Attempts running at once.")] = None,
    sandbox: Annotated[str | None, typer.Option("--sandbox", help="bwrap (default) or none (unsandboxed, "
                                                 "audited).")] = None,
    api_base: Annotated[str | None, typer.Option("--api-base", help="OpenAI-compatible server for builtin "
                                                  "(llama.cpp, vLLM, ...).")] = None,
    shadow: Annotated[list[str] | None, typer.Option("--shadow", help="NAME[:MODEL] run beside the others for "
                                                      "comparison; never the winner.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run object as JSON.")] = False,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Run TASK with one or more agents, each in its own worktree and sandbox, until --check passes.

    Exit 0 when an agent's check passed, 1 otherwise (2 for bad input)."""
    from loopmeter.agents.base import parse_agent_spec
    from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
    from loopmeter.config import load_settings

    settings = load_settings()
    task = None
    if task_dir is not None:
        from loopmeter.tasks import load_task, task_policy

        task = load_task(task_dir)
    instruction = task_text or (task.instruction if task else None)
    check_cmd = check or (task.check if task else None)
    if not instruction:
        raise LoopmeterError("no task given", hint='loopmeter run "what to do" --check "CMD", or --task DIR')
    if not check_cmd:
        raise LoopmeterError("no check command", hint='pass --check "CMD" (a command that exits 0 when done)')
    specs = [AgentSpec(*parse_agent_spec(a)) for a in agent or []]
    specs += [AgentSpec(*parse_agent_spec(s), role="shadow") for s in shadow or []]
    if not any(s.role == "primary" for s in specs):
        raise LoopmeterError("no primary agent", hint="pass --agent NAME[:MODEL] (shadows are never the winner)")
    _validate_agents(specs, api_base)
    repo_path = repo if repo is not None else (None if task is not None and task.repo_dir else Path.cwd())
    budgets = Budgets(max_iters=max_iters if max_iters is not None else settings.max_iters,
                      max_usd=max_usd if max_usd is not None else settings.max_usd,
                      max_tokens=max_tokens,
                      max_minutes=max_minutes if max_minutes is not None else settings.max_minutes)
    run_budgets = None
    if run_max_usd is not None or run_max_minutes is not None:
        run_budgets = Budgets(max_iters=None, max_usd=run_max_usd, max_tokens=None, max_minutes=run_max_minutes)
    if repo_path is not None:
        _note_uncommitted(repo_path)
    tty = sys.stdout.isatty() and not json_out
    progress = Progress() if tty else None
    req = RunRequest(
        instruction=instruction, check=check_cmd, repo=repo_path, agents=specs, task=task,
        policy=policy or (task_policy(task, settings.policy) if task else settings.policy), budgets=budgets,
        run_budgets=run_budgets, concurrency=concurrency or settings.concurrency,
        sandbox=sandbox or settings.sandbox, api_base=api_base, on_event=progress.event if progress else None,
        approver=_approver(progress), executor=executor, ray_address=ray_address,
    )
    try:
        result = start_run(req)
    finally:
        if progress:
            progress.stop()
    _finish(result, json_out)


def _validate_agents(specs: list[Any], api_base: str | None) -> None:
    from loopmeter.agents.base import check_usable

    for spec in specs:
        check_usable(spec.name, spec.model, api_base, label=f"builtin:{spec.model or ''}")
        if spec.name == "builtin":
            from loopmeter.telemetry.pricing import default_price_table

            if default_price_table().lookup(spec.model) is None:
                typer.echo(f"note: {spec.model} has no known price: its calls are stored as unpriced and "
                           "--max-usd cannot stop it (use --max-tokens)", err=True)


def _note_uncommitted(repo: Path) -> None:
    from loopmeter.agents.worktree import open_repo
    from loopmeter.errors import LoopmeterError
    from loopmeter.hostgit import HostGit, repo_layout

    try:
        top = Path(open_repo(repo).working_tree_dir or repo)
        dirty = HostGit(repo_layout(top))("status", "--porcelain", "--untracked-files=no",
                                           "--ignore-submodules=all", check=False).strip()
    except LoopmeterError:
        return
    if dirty:
        typer.echo("note: uncommitted changes are not seen by the agents (they start from HEAD)", err=True)


def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run id (or a unique prefix).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the run object as JSON.")] = False,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Continue RUN from its last finished step (after a crash, Ctrl-C or a pending approval)."""
    from loopmeter.agents.loop import resume_run
    from loopmeter.agents.runs import find_run
    from loopmeter.store import default_store

    store = default_store()
    run_id = find_run(store, run_id).id
    tty = sys.stdout.isatty() and not json_out
    progress = Progress() if tty else None
    try:
        result = resume_run(run_id, store=store, on_event=progress.event if progress else None,
                            approver=_approver(progress), executor=executor, ray_address=ray_address)
    finally:
        if progress:
            progress.stop()
    _finish(result, json_out)


def _answer(run_id: str, yes: bool, json_out: bool, executor: str, ray_address: str | None) -> None:
    from loopmeter.agents.loop import answer_approvals
    from loopmeter.agents.runs import find_run
    from loopmeter.store import default_store

    store = default_store()
    run_id = find_run(store, run_id).id
    result = answer_approvals(run_id, yes, store=store, executor=executor, ray_address=ray_address)
    _finish(result, json_out)


def approve(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run waiting for approval.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the run object as JSON.")] = False,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Approve what RUN is waiting for (a policy `ask`), and continue it."""
    _answer(run_id, True, json_out, executor, ray_address)


def deny(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run waiting for approval.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the run object as JSON.")] = False,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Deny what RUN is waiting for, and continue it (the agent is told no, or the attempt stops)."""
    _answer(run_id, False, json_out, executor, ray_address)


def _approver(progress: Progress | None) -> Callable[[list[dict[str, Any]]], dict[str, bool]] | None:
    """On a terminal, policy `ask`s are answered at a y/n prompt (the live display pauses meanwhile)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None
    if progress is None:
        return ask_on_tty

    def ask(questions: list[dict[str, Any]]) -> dict[str, bool]:
        progress.live.stop()
        try:
            return ask_on_tty(questions)
        finally:
            progress.live.start()

    return ask


def ask_on_tty(questions: list[dict[str, Any]]) -> dict[str, bool]:
    answers = {}
    for q in questions:
        typer.echo(f"\n{q.get('agent')} ({q.get('attempt_id')}) wants to {q.get('action')}: {q.get('target')}")
        if q.get("reason"):
            typer.echo(f"  policy: {q.get('reason')} [{q.get('rule_id')}]")
        answers[q["id"]] = typer.confirm("  allow?", default=False)
    return answers


def _finish(result: RunResult, json_out: bool) -> None:
    from loopmeter.agents.runs import run_object
    from loopmeter.store import default_store

    if json_out:
        typer.echo(json.dumps(run_object(default_store(), result.run_id), indent=2, default=str))
    else:
        print_attempts(result)
    if result.status == RunStatus.WAITING:
        typer.echo(f"run {result.run_id} is waiting for approval: `loopmeter approve {result.run_id}` "
                   f"or `loopmeter deny {result.run_id}`", err=True)
    raise typer.Exit(0 if result.status == RunStatus.PASSED else 1)


def print_attempts(result: RunResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from loopmeter.analytics.work import work_cost
    from loopmeter.reports.fmt import money

    table = Table(title=f"run {result.run_id}: {result.status}")
    for col in ("attempt", "agent", "status", "iters", "tokens in/out", "cost", "wall", "green", "stop reason"):
        table.add_column(col)
    for a in result.attempts:
        parts = (a.input_tokens, a.cache_read_tokens, a.cache_write_tokens)
        tokens_in = "—" if all(v is None for v in parts) else str(sum(v or 0 for v in parts))
        tokens_out = "—" if a.output_tokens is None else str(a.output_tokens)
        name = a.agent + (f":{a.model}" if a.model else "") + (" (shadow)" if a.role == "shadow" else "")
        mark = " *" if a.id == result.winner else ""
        table.add_row(a.id.rsplit("-", 1)[-1] + mark, name, a.status, str(a.iterations),
                      f"{tokens_in}/{tokens_out}", money(work_cost(a.cost_usd, a.unpriced_calls), a.unpriced_calls),
                      f"{a.wall_s or 0:.1f}s", f"{a.time_to_green_s:.1f}s" if a.time_to_green_s else "-",
                      a.stop_reason or "")
    Console().print(table)
    if result.winner:
        win = next(a for a in result.attempts if a.id == result.winner)
        typer.echo(f"winner: {win.agent}{':' + win.model if win.model else ''} on branch {win.branch}"
                   f" — `loopmeter apply {result.run_id}` merges it")
    elif result.status != RunStatus.WAITING:
        typer.echo("no attempt passed its check")


class Progress:
    """Live per-attempt lines on a TTY: state, iteration, tokens, $, elapsed."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.rows: dict[str, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.live = Live(self._render(), console=Console(), refresh_per_second=4, transient=False)
        self.live.start()

    def event(self, ev: dict[str, Any]) -> None:
        aid = ev.get("attempt_id")
        if not aid:
            return
        row = self.rows.setdefault(aid, {"agent": ev.get("agent") or "", "since": time.monotonic()})
        for key in ("state", "iteration", "tokens", "cost_usd", "agent", "model", "status"):
            if ev.get(key) is not None:
                row[key] = ev[key]
        self.live.update(self._render())

    def _render(self) -> Any:
        from rich.table import Table

        from loopmeter.reports.fmt import money

        table = Table(box=None)
        for col in ("attempt", "agent", "state", "iter", "tokens", "$", "elapsed"):
            table.add_column(col)
        for aid, r in sorted(self.rows.items()):
            table.add_row(aid.rsplit("-", 1)[-1], str(r.get("agent", "")) + (f":{r['model']}" if r.get("model") else ""),
                          str(r.get("status") or r.get("state", "")), str(r.get("iteration", "")),
                          str(r.get("tokens", "")), money(r.get("cost_usd")) if "cost_usd" in r else "",
                          f"{time.monotonic() - r['since']:.0f}s")
        return table

    def stop(self) -> None:
        self.live.stop()
