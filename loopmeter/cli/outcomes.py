"""`loopmeter outcomes`: pull requests tied to the sessions and runs that produced them.

`outcomes sync` reads local clones (--repo) and GitHub (--github); `outcomes` shows KPIs per
agent with the no-agent PRs as the baseline; `outcomes prs` lists PRs with their attribution
and cost; `outcomes compare --agent A --agent B` is the product-level A/B. JSON shapes are in
docs/usage.md.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from loopmeter.errors import LoopmeterError

app = typer.Typer(help="Pull requests, merges and reverts tied to agent spend; KPIs and A/B per agent.",
                  invoke_without_command=True)

SINCE_HELP = "Only PRs created (and usage) from this date (YYYY-MM-DD, local day) or ISO time."
BY = ("agent", "model", "user", "repo")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="outcomes")


def _since(value: str | None) -> datetime | None:
    from loopmeter.cli.report import parse_when
    from loopmeter.config import load_settings

    return parse_when(value, load_settings().timezone or "UTC") if value else None


def _identity(url_or_path: str) -> str:
    from loopmeter.outcomes.identity import repo_identity

    return str(repo_identity(url_or_path))


def _repo_filter(value: str) -> str:
    """--repo as a repository identity: a URL as it is, a local clone by its origin (else its top)."""
    import os

    from loopmeter.outcomes.identity import find_checkout, is_remote

    if not is_remote(value) and os.path.isdir(value):
        checkout = find_checkout(os.path.abspath(value))
        if checkout is not None:
            return checkout.identity
    return _identity(value)


def _attribution(since: str | None, repo: str | None) -> Any:
    from loopmeter.outcomes.attribution import attribute
    from loopmeter.store import default_store

    return attribute(default_store(), repo=_repo_filter(repo) if repo else None, since=_since(since))


@app.callback()
def outcomes(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="JSON: by_agent rows and unattributed_cost_usd.")] = False,
    by: Annotated[str, typer.Option("--by", help="agent, model, user or repo.")] = "agent",
    since: Annotated[str | None, typer.Option("--since", help=SINCE_HELP)] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repository (URL or path).")] = None,
) -> None:
    """KPIs per agent (PRs, merge rate, time to merge, reverts, cost per merged PR); no-agent PRs as baseline."""
    if ctx.invoked_subcommand is not None:
        return
    from loopmeter.outcomes import kpis

    if by not in BY:
        raise LoopmeterError(f"--by {by!r} is not known", hint="one of " + ", ".join(BY))
    summary = kpis.summary(_attribution(since, repo))
    if json_out:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    _print_kpis(summary, by)


def _print_kpis(summary: dict[str, Any], by: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from loopmeter.reports import fmt
    from loopmeter.safe_text import printable

    rows = summary[f"by_{by}"]
    if not rows:
        typer.echo("no pull requests yet: loopmeter outcomes sync --repo PATH --github OWNER/REPO")
    else:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for col in (by, "PRs", "merged", "rate", "95% CI", "p50", "p90", "review", "chg", "revert", "$/merged"):
            table.add_column(col, no_wrap=col != by, justify="left" if col == by else "right")
        for r in rows:
            ci = r["merge_rate_ci"] or [None, None]
            name = r[by] if by != "agent" else ("no agent (baseline)" if r["agent"] == "none" else r["agent"])
            table.add_row(printable(name), fmt.num(r["prs"]), fmt.num(r["merged"]), fmt.pct(r["merge_rate"]),
                          fmt.ci(ci[0], ci[1]), fmt.duration(r["p50_time_to_merge_s"]),
                          fmt.duration(r["p90_time_to_merge_s"]), fmt.duration(r["p50_time_to_first_review_s"]),
                          fmt.num(r["review_rounds_mean"], 1), fmt.pct(r["revert_rate"]),
                          fmt.money_per(r["cost_per_merged_pr_usd"], r["cost_usd"], r["unpriced_calls"]))
        Console().print(table)
        typer.echo("rate: merged / decided PRs; p50, p90: time to merge; review: to first review (p50)\n"
                   "chg: changes requested per PR; revert: reverted within 30 days / merged")
    typer.echo(f"unattributed spend (sessions that match no PR): "
               f"{fmt.money(summary['unattributed_cost_usd'], summary['unattributed_unpriced_calls'])} "
               f"in {summary['unattributed_sessions']:,} sessions")


@app.command("sync")
def sync(
    repo: Annotated[list[Path] | None, typer.Option("--repo", help="A local clone to read (repeatable).")] = None,
    github_repo: Annotated[list[str] | None, typer.Option(
        "--github", help="OWNER/REPO on GitHub to read PRs from (repeatable).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="On a first sync, read back to this date only.")] = None,
    api_url: Annotated[str | None, typer.Option(
        "--api-url", help="GitHub REST base URL (default: GITHUB_API_URL, else https://api.github.com).")] = None,
    max_wait: Annotated[float, typer.Option("--max-wait", help="Longest rate-limit wait, in seconds.")] = 60.0,
    json_out: Annotated[bool, typer.Option("--json", help="JSON: what was read per repository.")] = False,
) -> None:
    """Read default-branch history from local clones and pull requests from GitHub (incremental)."""
    from datetime import UTC

    from loopmeter.config import load_settings
    from loopmeter.outcomes import github
    from loopmeter.outcomes.sync import Db, sync_git, sync_github

    if not repo and not github_repo:
        raise LoopmeterError("nothing to sync", hint="give --repo PATH and/or --github OWNER/REPO")
    names = [github.check_repo(n) for n in github_repo or []]
    token = github.token() if names else None
    if names and not token:
        raise LoopmeterError("no GitHub token", hint="loopmeter auth set github, or set GITHUB_TOKEN")
    start = _since(since)
    now = datetime.now(UTC)
    out = []
    with Db.open(load_settings().db_url) as db:
        for path in repo or []:
            out.append(sync_git(db, path, _identity, since=start, now=now))
        if names:
            with github.Client(github.api_url(api_url), token, max_wait_s=max_wait) as client:
                for name in names:
                    out.append(sync_github(db, client, name, _identity, since=start, now=now))
    if json_out:
        typer.echo(json.dumps({"repos": out}, indent=2, default=str))
        return
    for r in out:
        if r["source"] == "git":
            typer.echo(f"{r['path']}: {r['commits']:,} new commits on the default branch, {r['prs']:,} PRs named")
        else:
            waited = f", waited {r['waited_s']:.0f} s for rate limits" if r["waited_s"] else ""
            typer.echo(f"{r['repo']}: {r['prs']:,} PRs new or updated ({r['requests']:,} requests{waited})")


@app.command("prs")
def prs(
    json_out: Annotated[bool, typer.Option("--json", help="JSON: {\"prs\": [...]} (shape in docs/usage.md).")] = False,
    since: Annotated[str | None, typer.Option("--since", help=SINCE_HELP)] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repository (URL or path).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only PRs this agent touched ('none': no agent).")] = None,
) -> None:
    """Pull requests with their agents, attribution, state, cost and revert."""
    from loopmeter.reports import fmt
    from loopmeter.safe_text import printable

    att = _attribution(since, repo)
    rows = [p for p in att.prs if agent is None or agent in (p.agents or ["none"])]
    if json_out:
        typer.echo(json.dumps({"prs": [p.as_json() for p in rows]}, indent=2))
        return
    if not rows:
        typer.echo("no pull requests: loopmeter outcomes sync --repo PATH --github OWNER/REPO")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("repo", "#", "branch", "state", "agents", "attribution", "cost", "to merge", "reverted", "title"):
        table.add_column(col, no_wrap=col != "title")
    for p in rows:
        j = p.as_json()
        cost = fmt.money(j["cost_usd"], j["unpriced_calls"]) if p.costed else "—"
        table.add_row(printable(p.repo), str(p.number), printable(p.branch or ""), p.state,
                      printable(", ".join(p.agents)), p.attribution, cost, fmt.duration(p.time_to_merge_s),
                      "yes" if p.reverted else "", printable((p.title or "")[:50]))
    Console().print(table)


@app.command("compare")
def compare(
    agent: Annotated[list[str], typer.Option("--agent", help="Two agents (usage names; 'none' for no agent).")],
    json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    since: Annotated[str | None, typer.Option("--since", help=SINCE_HELP)] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repository (URL or path).")] = None,
) -> None:
    """Product-level A/B: merge rate, revert rate and median time to merge of B minus A, with 95% intervals."""
    from loopmeter.outcomes import kpis
    from loopmeter.reports import fmt

    if len(agent) != 2:
        raise LoopmeterError("compare needs two agents", hint="--agent claude-code --agent codex")
    result = kpis.compare(_attribution(since, repo), agent[0], agent[1])
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"B = {result['b']} ({result['prs_b']} PRs) minus A = {result['a']} ({result['prs_a']} PRs)")
    for c in result["comparisons"]:
        if c["metric"] == "median_time_to_merge_s":
            ci = c["ci"]
            span = f"[{_signed(ci[0])}, {_signed(ci[1])}]" if ci else "—"
            line = (f"median time to merge: A {fmt.duration(c['a'])}, B {fmt.duration(c['b'])}; "
                    f"difference {_signed(c['diff'])} {span}; MDE {fmt.duration(c['mde'])}")
        else:
            ci = c["ci"]
            span = f"[{ci[0] * 100:+.0f}, {ci[1] * 100:+.0f}] points" if ci else "—"
            diff = f"{c['diff'] * 100:+.0f} points" if c["diff"] is not None else "—"
            mde = f"{c['mde'] * 100:.0f} points" if c["mde"] is not None else "—"
            line = (f"{c['metric'].replace('_', ' ')}: A {fmt.pct(c['a'])} of {c['n_a']}, B {fmt.pct(c['b'])} "
                    f"of {c['n_b']}; difference {diff} {span}; MDE {mde}")
        typer.echo(f"{line} -> {c['verdict']}")


def _signed(seconds: float | None) -> str:
    from loopmeter.reports import fmt

    if seconds is None:
        return fmt.DASH
    return ("-" if seconds < 0 else "+") + fmt.duration(abs(seconds))
