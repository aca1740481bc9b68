"""The agent loop: LangGraph drives every backend in its own worktree and sandbox.

Two graphs share one SQLite checkpointer (settings.checkpoint_path):

    run graph     (thread <run>)           start -> Send(attempt) x N -> gate -> compare
    attempt graph (thread <run>/<attempt>) prepare -> act -> verify -> decide -> (act | finish)

The run graph's `attempt` node drives one attempt graph on its own thread, so a
resume (after a crash or Ctrl-C) re-enters each unfinished attempt at its last
finished step. A policy `ask` interrupts the attempt graph; the run graph's
`gate` collects those questions into one interrupt of its own, answered by a
person on a TTY or by `loopmeter approve|deny RUN`.

This module is the public surface; the parts live beside it:
loop_records (request, results, graph states), loop_graph (the graphs' wiring, the
checkpointer, the run graph's nodes), loop_steps (the attempt graph's steps),
loop_runtime (driving a run, its records in the store, budgets) and loop_sandbox (the
traced sandbox runner).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.agents.budget import Budgets
from loopmeter.agents.loop_records import (
    AgentSpec,
    AttemptRecord,
    RunRequest,
    RunResult,
    new_run_id,
)
from loopmeter.agents.loop_runtime import _fill, _Runtime, cancel_run
from loopmeter.errors import LoopmeterError
from loopmeter.records import utcnow
from loopmeter.vocab import AttemptStatus, RunStatus

if TYPE_CHECKING:
    from loopmeter.config import Settings
    from loopmeter.store import Store

__all__ = [
    "AgentSpec", "AttemptRecord", "Budgets", "RunRequest", "RunResult", "new_run_id", "resume_run",
    "answer_approvals", "start_run", "pending_approvals", "cancel_run",
]


def start_run(req: RunRequest, *, store: Store | None = None, settings: Settings | None = None) -> RunResult:
    """Record a new run, prepare its attempts and run them to the end (or to a pending approval)."""
    from loopmeter.agents.base import get_backend
    from loopmeter.agents.worktree import branch_name, open_repo, repo_from_dir
    from loopmeter.config import load_settings
    from loopmeter.policies import Policy, load_policy
    from loopmeter.store import Attempt, Run, default_store

    settings = settings or load_settings()
    store = store or default_store()
    if not req.agents:
        raise LoopmeterError("no agents to run", hint="pass --agent NAME[:MODEL] at least once")
    for spec in req.agents:
        get_backend(spec.name)  # unknown agent -> LoopmeterError with the known names
    policy = load_policy(req.policy)
    run_id = req.run_id or new_run_id()
    repo_path = req.repo
    if req.task is not None and req.task.repo_dir is not None and req.repo is None:
        # the task's files become a one-commit repository kept beside the run's worktrees
        repo_path = repo_from_dir(req.task.repo_dir, settings.home / "repos" / run_id)
    if repo_path is None:
        raise LoopmeterError("no repository to work in", hint="pass --repo DIR or --task DIR")
    repo = open_repo(Path(repo_path))
    repo_root = Path(repo.working_tree_dir or repo_path).resolve()
    base_commit = repo.head.commit.hexsha
    used: set[str] = set()
    attempts = []
    for k, spec in enumerate(req.agents, 1):
        attempt_id = f"{run_id}-{k}"
        branch = branch_name(run_id, spec.name, used)
        attempts.append(Attempt(
            id=attempt_id, run_id=run_id, agent=spec.name, model=spec.model, role=spec.role,
            task_id=req.task.id if req.task else None, user=req.user or settings.user, project=req.project,
            branch=branch, base_commit=base_commit, status=AttemptStatus.PENDING,
            worktree=str(settings.worktrees_dir / run_id / branch.rsplit("/", 1)[-1]),
            epoch=(req.eval_meta or {}).get("epoch"),
        ))
    from loopmeter.executors import make_attempt_executor

    executor = make_attempt_executor(req.executor, store=store, ray_address=req.ray_address)  # fails before the run
    config = {
        "instruction": req.instruction, "check": req.check, "repo": str(repo_root),
        "task": str(req.task.path) if req.task and req.task.path else None,
        "human_hours": req.task.human_hours if req.task else None,  # ROI's hourly value model reads it
        "agents": [asdict(a) for a in req.agents], "budgets": req.budgets.as_dict(),
        "run_budgets": req.run_budgets.as_dict() if req.run_budgets else None,
        "concurrency": req.concurrency, "sandbox": req.sandbox, "api_base": req.api_base,
        "policy_ref": str(policy.path if isinstance(req.policy, Policy) else req.policy), "eval_meta": req.eval_meta, "env": req.env, "project": req.project,
    }
    run = Run(
        id=run_id, kind=req.kind, task=req.instruction, task_id=req.task.id if req.task else None,
        suite=(req.eval_meta or {}).get("suite"), repo=str(repo_root), base_commit=base_commit,
        user=req.user or settings.user, policy=policy.name, policy_sha256=policy.sha256, status=RunStatus.RUNNING,
        config=json.dumps(config), started_at=utcnow(), active_s=0.0,
    )
    store.save(run, *attempts)
    try:
        runtime = _Runtime(store, settings, run_id, config, policy, req.on_event, req.approver)
    except BaseException:  # e.g. the sandbox cannot start: the run ends before any attempt
        if executor is not None:
            executor.close()
        run.status, run.ended_at = RunStatus.ERROR, utcnow()
        store.save(run)
        raise
    runtime.executor = executor
    return runtime.drive({"attempt_ids": [a.id for a in attempts]})


def resume_run(
    run_id: str,
    *,
    store: Store | None = None,
    settings: Settings | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None = None,
    answers: dict[str, bool] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> RunResult:
    """Continue a run from its last finished step (after a crash, Ctrl-C or an approval).

    A run waiting for approval stays waiting unless `answers` ({question id: yes?}) or an
    `approver` answer its questions. `executor` says where its unfinished attempts run."""
    from loopmeter.executors import make_attempt_executor

    runtime = _Runtime.load(run_id, store, settings, on_event, approver)
    try:
        pending = runtime.pending()
        if pending and answers is None and approver is not None:
            answers = approver(pending)
        if pending and answers is None:
            return runtime.result(pending)
        if not pending and not runtime.has_checkpoint():
            raise LoopmeterError(f"run {run_id} has no checkpoint to resume",
                                 hint="it may have been started elsewhere; `loopmeter runs show` shows it")
        if not pending and runtime.finished():
            result = runtime.result([])
            runtime.close()
            return result
        runtime.executor = make_attempt_executor(executor, store=runtime.store, ray_address=ray_address)
    except BaseException:
        runtime.close()
        raise
    if pending:
        return runtime.drive(runtime.resume_command(_fill(pending, answers or {})))
    return runtime.drive(None)


def pending_approvals(run_id: str, *, store: Store | None = None, settings: Settings | None = None
                      ) -> list[dict[str, Any]]:
    """The questions a run is waiting on: [{"id", "attempt_id", "agent", "action", "target", "rule_id", ...}]."""
    runtime = _Runtime.load(run_id, store, settings, None, None)
    try:
        return runtime.pending()
    finally:
        runtime.close()


def answer_approvals(run_id: str, approve: bool, *, store: Store | None = None, settings: Settings | None = None,
                     on_event: Callable[[dict[str, Any]], None] | None = None, executor: str = "local",
                     ray_address: str | None = None) -> RunResult:
    """Answer every pending question of a run with yes (approve) or no (deny), then continue it
    (its attempts where `executor` says)."""
    from loopmeter.executors import make_attempt_executor

    runtime = _Runtime.load(run_id, store, settings, on_event, None)
    try:
        pending = runtime.pending()
        if not pending:
            raise LoopmeterError(f"run {run_id} is not waiting for approval",
                                 hint="`loopmeter runs show RUN` shows its state; `loopmeter resume RUN` continues it")
        runtime.executor = make_attempt_executor(executor, store=runtime.store, ray_address=ray_address)
    except BaseException:
        runtime.close()
        raise
    return runtime.drive(runtime.resume_command({q["id"]: approve for q in pending}))
