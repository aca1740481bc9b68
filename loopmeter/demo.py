"""`loopmeter demo`: the whole product on embedded defaults, offline, in a home of its own.

It makes a sample task from the gold suite, loops `oracle` and `nop` on it in
bubblewrap sandboxes (plus the builtin agent when a model is configured), runs
a small eval A/B, ingests the user's own agent logs when asked, and then shows
the dashboard (on a TTY) or prints the report.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopmeter.errors import LoopmeterError

DEMO_TASK = "fix-roman-numerals"
EVAL_TASKS = ["fix-roman-numerals", "fix-pagination", "feature-inventory-remove", "shell-rotate-backups",
              "data-log-levels", "make-failing-test-pass"]
LOCAL_SERVERS = [  # OpenAI-compatible servers people run locally (llama.cpp, Ollama, vLLM)
    "http://127.0.0.1:8080/v1",
    "http://127.0.0.1:11434/v1",
    "http://127.0.0.1:8000/v1",
]


def default_demo_home() -> Path:
    if os.environ.get("LOOPMETER_HOME"):
        return Path(os.environ["LOOPMETER_HOME"]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("loopmeter-demo", appauthor=False))


@dataclass
class DemoResult:
    home: Path
    run_id: str
    eval_run_id: str
    attempts: list[Any]
    winner: str | None
    verdicts: list[str]
    ingested_rows: int | None
    seconds: dict[str, float] = field(default_factory=dict)


def find_local_model(timeout: float = 0.3) -> tuple[str, str] | None:
    """(api_base, model) of a reachable local OpenAI-compatible server, or None."""
    import httpx

    for base in LOCAL_SERVERS:
        try:
            r = httpx.get(base + "/models", timeout=timeout)
            models = [m.get("id") for m in r.json().get("data", []) if m.get("id")]
        except Exception:
            continue
        if r.status_code == 200 and models:
            return base, str(models[0])
    return None


def _builtin_agent() -> tuple[str | None, str | None]:
    """('builtin:MODEL', api_base) when a model is configured or a local server answers."""
    model = os.environ.get("LOOPMETER_DEMO_MODEL")
    if model:
        return f"builtin:{model}", os.environ.get("OPENAI_BASE_URL")
    local = find_local_model()
    if local:
        base, name = local
        return f"builtin:openai/{name}", base
    return None, None


def has_agent_logs(env: dict[str, str] | None = None) -> bool:
    from loopmeter.telemetry.ingest.runner import discover

    try:
        return bool(discover(env=env))
    except LoopmeterError:
        return False


def run_demo(
    home: Path,
    *,
    sandbox: str = "bwrap",
    ingest: bool = False,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo into `home` (LOOPMETER_HOME is set to it for this process)."""
    os.environ["LOOPMETER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    from loopmeter.config import load_settings
    from loopmeter.sandbox.probe import INSTALL_HINT, probe_bwrap

    if sandbox == "bwrap":
        status = probe_bwrap()
        if not status.usable:
            raise LoopmeterError(
                f"the demo runs agents in bubblewrap sandboxes, but {status.error or 'bwrap is not usable'}",
                hint=status.hint or INSTALL_HINT,
            )
    settings = load_settings()
    from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.evals.suite import load_suite
    from loopmeter.store import open_store

    store = open_store(settings.db_url)
    gold = load_suite("gold")
    by_id = {t.id: t for t in gold.tasks}
    task = by_id.get(DEMO_TASK) or gold.tasks[0]
    seconds: dict[str, float] = {}

    agents = [AgentSpec("oracle"), AgentSpec("nop")]
    builtin, api_base = _builtin_agent()
    if builtin:
        _, _, model = builtin.partition(":")
        agents.append(AgentSpec("builtin", model))
        say(f"model configured: {builtin}" + (f" at {api_base}" if api_base else ""))
    say(f"1/4  loop: '{task.title}' with {', '.join(a.label for a in agents)} (sandbox: {sandbox})")
    t0 = time.perf_counter()
    result = start_run(
        RunRequest(instruction=task.instruction, check=task.check, repo=None, task=task, agents=agents,
                   policy="default", budgets=Budgets(max_iters=2, max_usd=0.5, max_minutes=5),
                   concurrency=2, sandbox=sandbox, api_base=api_base),
        store=store, settings=settings,
    )
    seconds["loop"] = time.perf_counter() - t0
    for a in result.attempts:
        say(f"     {a.agent:<10} {a.status:<8} iterations {a.iterations}  "
            f"stop: {a.stop_reason or '-'}  wall {a.wall_s or 0:.1f}s")
    winner = next((a for a in result.attempts if a.id == result.winner), None)
    say(f"     winner: {winner.agent if winner else 'none'}" + (f" (attempt {winner.id})" if winner else ""))

    suite_dir = home / "demo-suite"
    suite_dir.mkdir(exist_ok=True)
    names = [t for t in EVAL_TASKS if t in by_id]
    (suite_dir / "suite.toml").write_text(
        'name = "gold-sample"\ndescription = "A sample of the gold suite for the demo"\n'
        f"tasks = [{', '.join(repr(str(by_id[n].path)) for n in names)}]\n".replace("'", '"')
    )
    say(f"2/4  eval A/B: oracle vs nop on {len(names)} gold tasks")
    t0 = time.perf_counter()
    outcome = start_eval(suite_dir, ["oracle", "nop"],
                         EvalOptions(epochs=1, concurrency=2, sandbox=sandbox, max_iters=1), store=store)
    seconds["eval"] = time.perf_counter() - t0
    from loopmeter.evals.report import summarize_run

    summary = summarize_run(store, outcome.run_id)
    for cfg in summary["configs"]:
        lo, hi = cfg["pass_rate_ci"] or [None, None]
        say(f"     {cfg['agent']:<10} pass rate {cfg['pass_rate']:.0%}  (95% CI {lo:.0%}-{hi:.0%})")
    verdicts = [c["verdict"] for c in summary["comparisons"]]
    for v in verdicts:
        say(f"     verdict: {v}")

    from loopmeter.demo_logs import write_sample_logs, write_sample_repos
    from loopmeter.telemetry.ingest.runner import ingest as ingest_logs

    say("3/4  usage: ingesting sample Claude Code and Codex logs (projects named sample/...)")
    t0 = time.perf_counter()
    repos = write_sample_repos(home / "sample-repos")
    sample = write_sample_logs(home / "sample-logs", workdir=str(home / "sample-repos"))
    report = ingest_logs(store, db_url=settings.db_url, paths=[sample])
    say(f"     {report.files_seen} sample log files, {report.rows_added} model calls")
    prs = _sync_sample_repos(store, repos)
    say(f"     outcomes: {prs} pull requests from the sample repositories' local git history "
        "(merged, reverted, squashed), their sessions' cost tied to them")
    seconds["usage"] = time.perf_counter() - t0
    rows = None
    if ingest:
        say("     and your own agent logs (Claude Code, Codex, Gemini)")
        report = ingest_logs(store, db_url=settings.db_url)
        rows = report.rows_added
        say(f"     {report.files_seen} log files, {report.rows_added} model calls added")
    else:
        say("     your own agent logs were not read (none found, or --no-ingest)")

    from loopmeter.policies.audit import verify_chain
    from loopmeter.store import Audit

    verdict = verify_chain(store, settings.audit_anchor)
    say(f"4/4  audit: {store.count(Audit)} sandbox decisions recorded; hash chain "
        f"{'intact' if verdict.ok else 'BROKEN at record ' + str(verdict.first_bad_seq)}")
    store.dispose()
    return DemoResult(home=home, run_id=result.run_id, eval_run_id=outcome.run_id, attempts=result.attempts,
                      winner=result.winner, verdicts=verdicts, ingested_rows=rows, seconds=seconds)


def _sync_sample_repos(store: Any, repos: list[Path]) -> int:
    """`loopmeter outcomes sync --repo` on each sample repository (local git only); PRs named."""
    from datetime import UTC, datetime

    from loopmeter.outcomes.identity import repo_identity
    from loopmeter.outcomes.sync import Db, sync_git

    now = datetime.now(UTC)
    with Db.of(store) as db:
        return sum(sync_git(db, repo, lambda u: str(repo_identity(u)), since=None, now=now)["prs"] for repo in repos)


def render_report(home: Path, fmt: str = "md") -> str:
    """The shareable report over everything in the demo home."""
    from datetime import UTC, datetime

    from loopmeter.analytics.filters import Filters, range_filters
    from loopmeter.analytics.kpis import compute
    from loopmeter.config import load_settings
    from loopmeter.reports import render
    from loopmeter.store import open_store

    settings = load_settings()
    store = open_store(settings.db_url)
    now = datetime.now(UTC)
    filters = range_filters("all", now, Filters(timezone=settings.timezone or "UTC"))
    data = compute(store, filters, value=settings.value, home=home, now=now)
    store.dispose()
    return render(data, fmt)


def clean(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
