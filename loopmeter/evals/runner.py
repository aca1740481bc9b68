"""Run a suite against several configurations: one result per (configuration, task, epoch).

One eval = one `run` row (kind "eval") plus one `eval_result` row per cell. A coding
cell goes through the same loop and sandbox as `loopmeter run`: it is one child run
(kind "eval", one agent) started with `agents.loop.start_run`, whose attempt the
result row points at. A model cell is one litellm call scored by the task's scorer.

Cells are interleaved (epoch -> task -> configurations, rotated per task) so that no
configuration systematically runs first or last. A cell whose agent crashed or
whose infrastructure failed is stored with an `error_kind` and counts as a failure
(kept in the denominator). Re-running skips cells already stored, so an interrupted
eval resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.analytics.work import work_cost
from loopmeter.errors import LoopmeterError
from loopmeter.evals.suite import Suite, load_suite
from loopmeter.tasks import Task, task_policy
from loopmeter.vocab import AttemptStatus, ErrorKind, RunStatus

if TYPE_CHECKING:
    from loopmeter.policies import Policy, PolicyText

Event = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class EvalConfig:
    """One configuration under test: a backend (+ model), or a bare model for model suites."""

    agent: str
    model: str | None = None

    @property
    def name(self) -> str:
        if self.agent == "model":
            return self.model or "model"
        return f"{self.agent}:{self.model}" if self.model else self.agent


def parse_configs(specs: list[str], suite_kind: str) -> list[EvalConfig]:
    """`--agent` values -> configurations. For model suites a value is a litellm model name."""
    from loopmeter.agents.base import parse_agent_spec

    if len(specs) < 1:
        raise LoopmeterError("give at least one --agent", hint="e.g. --agent oracle --agent nop")
    configs: list[EvalConfig] = []
    for spec in specs:
        if suite_kind == "model":
            prefix, _, rest = spec.partition(":")
            configs.append(EvalConfig("model", rest if prefix in ("model", "builtin") and rest else spec))
        else:
            name, model = parse_agent_spec(spec)
            configs.append(EvalConfig(name, model))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise LoopmeterError(f"the same configuration is given twice: {', '.join(names)}",
                             hint="use --epochs K to repeat a configuration")
    return configs


def check_agents(configs: list[EvalConfig], api_base: str | None) -> None:
    """Fail before the first cell when an agent is unknown, not installed, or has no key (exit 2 with a hint)."""
    from loopmeter.agents.base import check_usable

    for config in configs:
        check_usable(config.agent, config.model, api_base, label=config.name)


@dataclass
class EvalOptions:
    epochs: int = 1
    concurrency: int = 2
    max_usd: float | None = None  # whole eval; no new cell starts once spent
    policy: str = "default"
    sandbox: str = "bwrap"
    api_base: str | None = None
    max_iters: int = 5  # per coding attempt
    attempt_max_usd: float = 2.0  # per coding attempt
    keep_worktrees: bool = False  # else each cell's scratch repo and worktree are removed when it ends


@dataclass
class Cell:
    config: EvalConfig
    task: Task
    epoch: int
    item: Any = None  # a model_tasks.Item for model tasks

    @property
    def task_id(self) -> str:
        return f"{self.task.id}/{self.item.id}" if self.item is not None else self.task.id

    def attempt_key(self, run_id: str) -> str:
        raw = f"{run_id}|{self.config.name}|{self.task_id}|{self.epoch}"
        return "ev-" + hashlib.sha1(raw.encode()).hexdigest()[:24]


@dataclass
class CellResult:
    passed: bool
    score: float | None = None
    wall_s: float | None = None
    latency_ms: float | None = None
    attempt_id: str | None = None
    input_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    error_kind: ErrorKind | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    stored: bool = False  # its row is in the store already (a Ray worker stored it); else the driver stores it


@dataclass
class EvalOutcome:
    run_id: str
    suite: str
    status: RunStatus  # completed, budget, cancelled
    ran: int  # cells run now
    already: int  # cells found stored (resume)
    total: int
    wall_s: float
    skipped_tasks: list[tuple[str, str]] = field(default_factory=list)


def plan(suite: Suite, configs: list[EvalConfig], epochs: int) -> list[Cell]:
    """Every (configuration, task, epoch), interleaved: epoch, then task, then configs rotated by task."""
    from loopmeter.evals.model_tasks import load_dataset

    units: list[tuple[Task, Any]] = []
    for task in suite.tasks:
        if task.kind == "model":
            units.extend((task, item) for item in load_dataset(task))
        else:
            units.append((task, None))
    cells: list[Cell] = []
    for epoch in range(epochs):
        for i, (task, item) in enumerate(units):
            shift = (i + epoch) % len(configs)
            for config in configs[shift:] + configs[:shift]:
                cells.append(Cell(config, task, epoch, item))
    return cells


# -- executing one cell -------------------------------------------------------

def run_model_cell(cell: Cell, run_id: str, options: EvalOptions, store: Any) -> CellResult:
    from loopmeter.evals.model_tasks import run_item

    attempt_id = cell.attempt_key(run_id)
    started = time.monotonic()
    res = run_item(cell.task, cell.item, cell.config.model or "", run_id=run_id, attempt_id=attempt_id,
                   api_base=options.api_base)
    wall_s = time.monotonic() - started
    row = res.usage
    if row is not None:
        store.add_usage([row])
    detail: dict[str, Any] = {"answer": (res.output or "")[:500]}
    if res.detail:
        detail["error"] = res.detail
    return CellResult(
        passed=res.passed, score=res.score, wall_s=wall_s, latency_ms=res.latency_ms, attempt_id=attempt_id,
        input_tokens=row.input_tokens if row else None, cache_read_tokens=row.cache_read_tokens if row else None,
        cache_write_tokens=row.cache_write_tokens if row else None, output_tokens=row.output_tokens if row else None,
        reasoning_tokens=row.reasoning_tokens if row else None, cost_usd=row.cost_usd if row else 0.0,
        error_kind=res.error_kind, detail={**detail, "priced": bool(row and row.cost_usd is not None)},
    )


def run_coding_cell(cell: Cell, run_id: str, options: EvalOptions, store: Any,
                    remaining_usd: float | None, suite_name: str | None = None,
                    cell_meta: dict[str, Any] | None = None, policy: Policy | None = None) -> CellResult:
    """One attempt through the agent loop (same loop and sandbox as `loopmeter run`), in a scratch repo.

    `cell_meta` (the cell's id, the node running it) joins the child run's eval_meta (`eval status`);
    `policy`, the eval's policy file as the driver read it, is used instead of `options.policy`."""
    import shutil
    import tempfile

    from loopmeter.agents.worktree import repo_from_dir

    task = cell.task
    scratch = Path(tempfile.mkdtemp(prefix=f"loopmeter-eval-{task.id}-"))
    try:
        repo = repo_from_dir(task.repo_dir, scratch / "repo") if task.repo_dir else None
        return _coding_attempt(cell, run_id, options, store, remaining_usd, suite_name, repo, cell_meta or {},
                               policy)
    finally:
        if not options.keep_worktrees:
            shutil.rmtree(scratch, ignore_errors=True)


def _coding_attempt(cell: Cell, run_id: str, options: EvalOptions, store: Any, remaining_usd: float | None,
                    suite_name: str | None, repo: Path | None, cell_meta: dict[str, Any],
                    policy: Policy | None) -> CellResult:
    import shutil

    from sqlmodel import select

    from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
    from loopmeter.store import Attempt

    task = cell.task
    max_usd = options.attempt_max_usd if remaining_usd is None else min(options.attempt_max_usd, remaining_usd)
    request = RunRequest(
        instruction=task.instruction, check=task.check, repo=repo,
        agents=[AgentSpec(name=cell.config.agent, model=cell.config.model, role="primary")],
        task=task, policy=task_policy(task, options.policy if policy is None else policy),
        budgets=Budgets(max_iters=options.max_iters, max_usd=max_usd, max_minutes=task.time_limit_s / 60.0),
        concurrency=1, kind="eval", sandbox=options.sandbox, api_base=options.api_base,
        eval_meta={"eval_run_id": run_id, "suite": suite_name, "config": cell.config.name, "task_id": task.id,
                   "epoch": cell.epoch, **cell_meta},
    )
    started = time.monotonic()
    try:
        result = start_run(request, store=store)
    except LoopmeterError as exc:
        return CellResult(False, 0.0, time.monotonic() - started, cost_usd=0.0, error_kind=ErrorKind.INFRA,
                          detail={"error": exc.message, "hint": exc.hint})
    with store.session() as s:
        attempts = list(s.exec(select(Attempt).where(Attempt.run_id == result.run_id)))
    if not attempts:
        return CellResult(False, 0.0, time.monotonic() - started, cost_usd=0.0, error_kind=ErrorKind.INFRA,
                          detail={"error": f"run {result.run_id} recorded no attempt", "child_run": result.run_id})
    att = attempts[0]
    if not options.keep_worktrees and att.worktree:
        shutil.rmtree(att.worktree, ignore_errors=True)
    error_kind = ErrorKind.of_attempt(att.status, att.error_kind)
    passed = att.status == AttemptStatus.PASSED
    cost = work_cost(att.cost_usd, att.unpriced_calls)  # no model call (oracle, nop, a crash) costs $0
    return CellResult(
        passed=passed, score=1.0 if passed else 0.0, wall_s=att.wall_s, attempt_id=att.id,
        input_tokens=att.input_tokens, cache_read_tokens=att.cache_read_tokens,
        cache_write_tokens=att.cache_write_tokens, output_tokens=att.output_tokens,
        reasoning_tokens=att.reasoning_tokens, cost_usd=cost, error_kind=error_kind,
        detail={"child_run": result.run_id, "status": att.status, "stop_reason": att.stop_reason,
                "iterations": att.iterations, "unpriced_calls": att.unpriced_calls,
                "priced": att.unpriced_calls == 0},
    )


# -- the eval -----------------------------------------------------------------

def _new_id() -> str:
    """A ULID: 48-bit milliseconds + 80 random bits in Crockford base32, so ids sort by time."""
    import os

    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _done_cells(store: Any, run_id: str) -> set[tuple[str, str, int]]:
    from sqlmodel import select

    from loopmeter.store import EvalResult

    with store.session() as s:
        rows = s.exec(select(EvalResult.config, EvalResult.task_id, EvalResult.epoch)
                      .where(EvalResult.run_id == run_id)).all()
    return {(c, t, e) for c, t, e in rows}


def _spent(store: Any, run_id: str) -> float:
    from sqlalchemy import func
    from sqlmodel import select

    from loopmeter.store import EvalResult

    with store.session() as s:
        total = s.exec(select(func.sum(EvalResult.cost_usd)).where(EvalResult.run_id == run_id)).one()
    return float(total or 0.0)


def save_result(store: Any, run_id: str, suite: str, cell: Cell, res: CellResult) -> None:
    from sqlalchemy.exc import IntegrityError

    from loopmeter.records import utcnow
    from loopmeter.store import EvalResult

    row = EvalResult(
        run_id=run_id, suite=suite, config=cell.config.name, agent=cell.config.agent, model=cell.config.model,
        task_id=cell.task_id, epoch=cell.epoch, attempt_id=res.attempt_id, passed=res.passed, score=res.score,
        wall_s=res.wall_s, latency_ms=res.latency_ms, input_tokens=res.input_tokens,
        cache_read_tokens=res.cache_read_tokens, cache_write_tokens=res.cache_write_tokens,
        output_tokens=res.output_tokens, reasoning_tokens=res.reasoning_tokens, cost_usd=res.cost_usd,
        error_kind=res.error_kind, detail=json.dumps(res.detail, default=str), created_at=utcnow(),
    )
    try:
        store.save(row)
    except IntegrityError:  # another process stored this cell first (two resumes at once)
        pass


def _open_executor(executor: Any, store: Any, options: EvalOptions, ray_address: str | None) -> tuple[Any, bool]:
    """(the executor, whether this call owns it): a name is opened here, an Executor is the caller's."""
    if not isinstance(executor, str):
        return executor, False
    from loopmeter.executors import make_executor

    return make_executor(executor, store=store, concurrency=options.concurrency, ray_address=ray_address), True


def cell_specs(run_id: str, suite: Suite, cells: list[Cell], options: EvalOptions, store: Any,
               policy: PolicyText | None = None) -> list[Any]:
    """The cells as they travel to an executor (loopmeter/executors/base.py CellSpec); `policy`:
    the eval's policy file as read once (eval_policy)."""
    from loopmeter.executors.base import CellSpec, public_store_url

    url = public_store_url(store)
    return [CellSpec(c.attempt_key(run_id), run_id, suite.name, c, options, None, url, policy=policy)
            for c in cells]


def eval_policy(suite: Suite, options: EvalOptions) -> PolicyText | None:
    """The eval's policy for its coding cells, read and validated here once (a bad one is bad input,
    exit 2, not an infra error in every cell): a file travels by content, a preset by name (None).
    A task naming a preset of its own is checked too (task_policy)."""
    from loopmeter.policies import load_policy, policy_content

    if suite.kind != "repo":
        return None
    for ref in sorted({str(task_policy(t, options.policy)) for t in suite.tasks} - {options.policy}):
        load_policy(ref)
    return policy_content(options.policy)


def start_eval(suite_ref: str | Path, agent_specs: list[str], options: EvalOptions, *, store: Any,
               on_event: Event | None = None, cancel: threading.Event | None = None,
               executor: Any = "local", ray_address: str | None = None) -> EvalOutcome:
    """Create the eval run and run every cell (`executor`: "local", "ray", or an Executor)."""
    from loopmeter.records import utcnow
    from loopmeter.store import Run

    suite = load_suite(suite_ref)
    if not suite.tasks:
        raise LoopmeterError(f"suite {suite.name} has no runnable tasks",
                             hint="; ".join(f"{t}: {why}" for t, why in suite.skipped) or None)
    configs = parse_configs(agent_specs, suite.kind)
    if suite.kind == "mixed":
        raise LoopmeterError(f"suite {suite.name} mixes coding and model tasks",
                             hint="put model tasks and coding tasks in separate suites")
    if options.epochs < 1 or options.concurrency < 1:
        raise LoopmeterError("--epochs and --concurrency must be >= 1")
    if suite.kind == "repo":
        if (executor if isinstance(executor, str) else executor.name) == "local":
            check_agents(configs, options.api_base)
        else:  # installed CLIs and keys are each node's own: only the names are checked here
            from loopmeter.agents.base import get_backend

            for c in configs:
                get_backend(c.agent)
    policy = eval_policy(suite, options)
    run_id = _new_id()
    cells = plan(suite, configs, options.epochs)
    ex, owned = _open_executor(executor, store, options, ray_address)
    try:
        ex.prepare(cell_specs(run_id, suite, cells, options, store, policy))  # fails fast, before the run is stored
        config = {"suite_ref": str(suite_ref), "suite_path": str(suite.path), "suite": suite.name,
                  "suite_kind": suite.kind, "agents": agent_specs, "configs": [c.name for c in configs],
                  "options": asdict(options), "skipped_tasks": suite.skipped, "cells_total": len(cells),
                  "executor": ex.name}
        from loopmeter.config import load_settings

        store.save(Run(id=run_id, kind="eval", task=f"eval {suite.name}", suite=suite.name,
                       status=RunStatus.RUNNING, user=load_settings().user, policy=options.policy,
                       config=json.dumps(config), started_at=utcnow()))
        return _execute(run_id, suite, configs, options, ex, policy, store=store, on_event=on_event, cancel=cancel)
    finally:
        if owned:
            ex.close()


def resume_eval(run_id: str, *, store: Any, concurrency: int | None = None, max_usd: float | None = None,
                on_event: Event | None = None, cancel: threading.Event | None = None,
                executor: Any = "local", ray_address: str | None = None) -> EvalOutcome:
    """Run the cells of an earlier eval that have no result yet (on any executor)."""
    from loopmeter.evals.report import find_eval_run

    run = find_eval_run(store, run_id)
    run_id = run.id
    config = json.loads(run.config or "{}")
    options = EvalOptions(**config.get("options", {}))
    if concurrency is not None:
        options.concurrency = concurrency
    if max_usd is not None:
        options.max_usd = max_usd
    ref = config.get("suite_ref", "")
    suite = load_suite(ref if ref == "gold" else config.get("suite_path", ref))
    configs = parse_configs(config.get("agents", []), suite.kind)
    policy = eval_policy(suite, options)
    ex, owned = _open_executor(executor, store, options, ray_address)
    try:
        run.status, run.ended_at = RunStatus.RUNNING, None
        run.config = json.dumps({**config, "options": asdict(options)})
        store.save(run)
        return _execute(run_id, suite, configs, options, ex, policy, store=store, on_event=on_event, cancel=cancel)
    finally:
        if owned:
            ex.close()


def _execute(run_id: str, suite: Suite, configs: list[EvalConfig], options: EvalOptions, ex: Any,
             policy: PolicyText | None, *, store: Any, on_event: Event | None,
             cancel: threading.Event | None) -> EvalOutcome:
    from loopmeter.records import utcnow
    from loopmeter.store import Run

    started = time.monotonic()
    cells = plan(suite, configs, options.epochs)
    done = _done_cells(store, run_id)
    todo = [c for c in cells if (c.config.name, c.task_id, c.epoch) not in done]
    already = len(cells) - len(todo)
    queue = ex.prepare(cell_specs(run_id, suite, todo, options, store, policy))
    emit = on_event or (lambda _e: None)
    emit({"event": "start", "run_id": run_id, "total": len(cells), "todo": len(todo), "already": already,
          "executor": ex.name})
    cancel = cancel or threading.Event()
    spent = _spent(store, run_id)
    status = RunStatus.COMPLETED
    ran = 0
    running: dict[Any, Any] = {}  # handle -> CellSpec
    cancel_sent = False
    try:
        while queue or running:
            while queue and len(running) < options.concurrency and not cancel.is_set():
                if options.max_usd is not None and spent >= options.max_usd:
                    status = RunStatus.BUDGET
                    break
                remaining = None if options.max_usd is None else max(options.max_usd - spent, 0.0)
                spec = replace(queue.pop(0), remaining_usd=remaining)
                running[ex.submit(spec)] = spec
            if status == RunStatus.BUDGET or cancel.is_set():
                queue.clear()
            if cancel.is_set() and running and not cancel_sent:
                ex.cancel(list(running))  # a cell that still finishes is stored; a cancelled one is not
                cancel_sent = True
            if not running:
                break
            finished, still = ex.wait(list(running), timeout=1.0)
            for handle in set(running) - {h for h, _ in finished} - set(still):
                running.pop(handle)  # cancelled: nothing to store, a resume runs it again
            for handle, res in finished:
                spec = running.pop(handle)
                if res.error_kind == ErrorKind.CANCELLED and cancel.is_set():
                    continue  # left unstored, so a resume runs it again
                if not res.stored:  # a local cell, or a Ray cell whose worker failed before storing it
                    save_result(store, run_id, suite.name, spec.cell, res)
                spent += res.cost_usd or 0.0
                ran += 1
                emit({"event": "cell", "config": spec.cell.config.name, "task_id": spec.cell.task_id,
                      "epoch": spec.cell.epoch, "passed": res.passed, "error_kind": res.error_kind,
                      "node": res.detail.get("node"), "done": already + ran, "total": len(cells)})
    except KeyboardInterrupt:
        cancel.set()
        if running:
            ex.cancel(list(running))
        status = RunStatus.CANCELLED
    if cancel.is_set():
        status = RunStatus.CANCELLED
    run = store.get(Run, run_id)
    if run is not None:
        run.status = status
        run.ended_at = utcnow()
        store.save(run)
    outcome = EvalOutcome(run_id, suite.name, status, ran, already, len(cells), time.monotonic() - started,
                          suite.skipped)
    emit({"event": "end", **asdict(outcome)})
    return outcome
