"""The agent loop: LangGraph drives every backend in its own worktree and sandbox.

Two graphs share one SQLite checkpointer (settings.checkpoint_path):

    run graph     (thread <run>)           start -> Send(attempt) x N -> gate -> compare
    attempt graph (thread <run>/<attempt>) prepare -> act -> verify -> decide -> (act | finish)

The run graph's `attempt` node drives one attempt graph on its own thread, so a
resume (after a crash or Ctrl-C) re-enters each unfinished attempt at its last
finished step. A policy `ask` interrupts the attempt graph; the run graph's
`gate` collects those questions into one interrupt of its own, answered by a
person on a TTY or by `loopmeter approve|deny RUN`.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from loopmeter.agents.budget import Budgets, Spent, Stop, backend_stop, exceeded, remaining, tighter
from loopmeter.errors import LoopmeterError
from loopmeter.records import utcnow
from loopmeter.vocab import AttemptStatus, RunStatus, StopKind

if TYPE_CHECKING:
    from loopmeter.config import Settings
    from loopmeter.evals.task import Task
    from loopmeter.store import Store

__all__ = [
    "AgentSpec", "AttemptRecord", "Budgets", "RunRequest", "RunResult", "new_run_id", "resume_run",
    "answer_approvals", "start_run", "pending_approvals",
]

RECURSION_LIMIT = 1000
HARD_MAX_ITERS = 300  # 3 graph steps per iteration must stay under RECURSION_LIMIT
# a stale .pyc written by one check (same size, same second) would hide the agent's next edit
CHECK_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id() -> str:
    """A ULID: 48-bit milliseconds + 80 random bits, Crockford base32 (sorts by time)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@dataclass
class AgentSpec:
    name: str
    model: str | None = None
    role: str = "primary"  # primary | shadow (never the winner, never applied)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model}" if self.model else self.name


@dataclass
class RunRequest:
    instruction: str
    check: str
    repo: Path | None
    agents: list[AgentSpec]
    task: Task | None = None
    policy: str | Path = "default"
    budgets: Budgets = field(default_factory=Budgets)
    run_budgets: Budgets | None = None
    concurrency: int = 2
    kind: str = "loop"  # loop | eval | shadow
    run_id: str | None = None
    sandbox: str = "bwrap"
    api_base: str | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    eval_meta: dict[str, Any] | None = None
    # answers policy `ask`s in-process (a TTY prompt): list of questions -> {question id: approved}
    approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra non-secret env for agents
    user: str | None = None
    project: str | None = None


@dataclass
class AttemptRecord:
    id: str
    agent: str
    model: str | None
    role: str
    status: str
    stop_reason: str | None
    iterations: int
    input_tokens: int | None  # None: the agent made calls but never reported this kind
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    unpriced_calls: int
    wall_s: float | None
    time_to_green_s: float | None
    time_to_signal_s: float | None
    iterations_to_green: int | None
    branch: str | None
    worktree: str | None
    head_commit: str | None
    diffstat: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    run_id: str
    status: str  # a RunStatus value
    attempts: list[AttemptRecord]
    winner: str | None
    approvals: list[dict[str, Any]] = field(default_factory=list)  # pending questions when waiting


# -- graph states -----------------------------------------------------------


class AttemptState(TypedDict, total=False):
    attempt_id: str
    iteration: int
    active_s: float
    feedback: str | None
    last_act: dict[str, Any]
    last_check: dict[str, Any]
    status: str
    stop_reason: str | None
    time_to_signal_s: float | None
    time_to_green_s: float | None
    iterations_to_green: int | None
    spent_before: list[Any]  # [usd, tokens, unpriced calls] of the attempt before the last act


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {**a, **b}


class RunState(TypedDict, total=False):
    attempt_ids: list[str]
    results: Annotated[dict[str, Any], _merge]
    answers: dict[str, Any]
    rounds: Annotated[int, operator.add]
    winner: str | None


class _Cancelled(Exception):
    """The run was cancelled mid-step: the step is not recorded as finished, so resume redoes it."""


# -- public API ---------------------------------------------------------------


def start_run(req: RunRequest, *, store: Store | None = None, settings: Settings | None = None) -> RunResult:
    """Record a new run, prepare its attempts and run them to the end (or to a pending approval)."""
    from loopmeter.agents.base import get_backend
    from loopmeter.agents.worktree import branch_name, open_repo, repo_from_dir
    from loopmeter.config import load_settings
    from loopmeter.policies import load_policy
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
    config = {
        "instruction": req.instruction, "check": req.check, "repo": str(repo_root),
        "task": str(req.task.path) if req.task and req.task.path else None,
        "human_hours": req.task.human_hours if req.task else None,  # ROI's hourly value model reads it
        "agents": [asdict(a) for a in req.agents], "budgets": req.budgets.as_dict(),
        "run_budgets": req.run_budgets.as_dict() if req.run_budgets else None,
        "concurrency": req.concurrency, "sandbox": req.sandbox, "api_base": req.api_base,
        "policy_ref": str(req.policy), "eval_meta": req.eval_meta, "env": req.env, "project": req.project,
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
        run.status, run.ended_at = RunStatus.ERROR, utcnow()
        store.save(run)
        raise
    return runtime.drive({"attempt_ids": [a.id for a in attempts]})


def resume_run(
    run_id: str,
    *,
    store: Store | None = None,
    settings: Settings | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None = None,
    answers: dict[str, bool] | None = None,
) -> RunResult:
    """Continue a run from its last finished step (after a crash, Ctrl-C or an approval).

    A run waiting for approval stays waiting unless `answers` ({question id: yes?}) or an
    `approver` answer its questions."""
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
                     on_event: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Answer every pending question of a run with yes (approve) or no (deny), then continue it."""
    runtime = _Runtime.load(run_id, store, settings, on_event, None)
    pending = runtime.pending()
    if not pending:
        runtime.close()
        raise LoopmeterError(f"run {run_id} is not waiting for approval",
                             hint="`loopmeter runs show RUN` shows its state; `loopmeter resume RUN` continues it")
    return runtime.drive(runtime.resume_command({q["id"]: approve for q in pending}))


def _fill(pending: list[dict[str, Any]], answers: dict[str, bool]) -> dict[str, bool]:
    return {q["id"]: bool(answers.get(q["id"], False)) for q in pending}


# -- the runtime: everything a node needs that is not graph state -------------------


_active: dict[str, _Runtime] = {}


def cancel_run(run_id: str) -> None:
    """Cancel a run driven by this process: its agents and checks are killed; resume continues it."""
    runtime = _active.get(run_id)
    if runtime is not None:
        runtime.cancel_all()


class _Runtime:
    def __init__(self, store: Store, settings: Settings, run_id: str, config: dict[str, Any], policy: Any,
                 on_event: Callable[[dict[str, Any]], None] | None,
                 approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None):
        from loopmeter.sandbox import make_runner
        from loopmeter.telemetry.otel import setup

        self.store = store
        self.settings = settings
        self.run_id = run_id
        self.config = config
        self.policy = policy
        self.on_event = on_event
        self.approver = approver
        self.budgets = Budgets.from_dict(config["budgets"]) or Budgets()
        self.run_budgets = Budgets.from_dict(config.get("run_budgets"))
        self.cancel = threading.Event()  # the whole run: Ctrl-C or cancel_run
        # per attempt: set on cancel, or when a stored usage row spends a USD/token budget mid-step
        self.stop_events: dict[str, threading.Event] = {}
        self.stop_reasons: dict[str, Stop] = {}
        _active[run_id] = self
        self.telemetry = setup(store)
        self.runner = _TracedRunner(make_runner(config["sandbox"], store=store), self.telemetry.tracer,
                                    self.git_layout)
        self.task = _load_task(config.get("task"))
        self._lock = threading.Lock()
        self._layouts: dict[str, Any] = {}
        self._conn: Any = None
        # the run's driven time: what earlier drives recorded, plus this one's (see run_wall_s)
        self._active_before: float | None = None
        self._drive_t0 = time.monotonic()
        self.run_graph, self.attempt_graph = self._build()

    @classmethod
    def load(cls, run_id: str, store: Store | None, settings: Settings | None,
             on_event: Callable[[dict[str, Any]], None] | None,
             approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None) -> _Runtime:
        from loopmeter.config import load_settings
        from loopmeter.policies import load_policy
        from loopmeter.store import Run, default_store

        settings = settings or load_settings()
        store = store or default_store()
        run = store.get(Run, run_id)
        if run is None:
            raise LoopmeterError(f"no run {run_id}", hint="`loopmeter runs list` shows the runs")
        config = json.loads(run.config or "{}")
        if "agents" not in config:
            raise LoopmeterError(f"run {run_id} was not made by `loopmeter run`", hint="nothing to resume")
        policy = load_policy(config.get("policy_ref") or run.policy or "default")
        if run.policy_sha256 and policy.sha256 != run.policy_sha256:
            raise LoopmeterError(f"the policy of run {run_id} changed since it started",
                                 hint=f"restore the policy with sha256 {run.policy_sha256} to resume it")
        return cls(store, settings, run_id, config, policy, on_event, approver)

    # -- graphs -------------------------------------------------------------
    def _checkpointer(self) -> Any:
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        from loopmeter.store.engine import ensure_wal

        path = self.settings.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        ensure_wal(self._conn)  # several runs in one eval open this file at once
        self._conn.execute("PRAGMA synchronous=NORMAL")
        return SqliteSaver(self._conn)

    def _build(self) -> tuple[Any, Any]:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import Send

        saver = self._checkpointer()
        steps = _AttemptSteps(self)

        ag = StateGraph(AttemptState)
        ag.add_node("prepare", steps.prepare)
        ag.add_node("act", steps.act)
        ag.add_node("verify", steps.verify)
        ag.add_node("decide", steps.decide)
        ag.add_node("finish", steps.finish)
        ag.add_edge(START, "prepare")
        ag.add_edge("prepare", "act")
        ag.add_edge("act", "verify")
        ag.add_edge("verify", "decide")
        ag.add_conditional_edges("decide", lambda s: "finish" if s.get("status") else "act", ["act", "finish"])
        ag.add_edge("finish", END)
        attempt_graph = ag.compile(checkpointer=saver)

        def fan_out(state: RunState) -> Any:
            return [Send("attempt", {"attempt_id": a}) for a in state["attempt_ids"]]

        def after_gate(state: RunState) -> Any:
            answers = state.get("answers") or {}
            waiting = [a for a, r in state.get("results", {}).items() if r.get("status") == AttemptStatus.WAITING]
            if not waiting:
                return "compare"
            return [Send("attempt", {"attempt_id": a, "resume": answers.get(a, {})}) for a in waiting]

        rg = StateGraph(RunState)
        rg.add_node("start", lambda s: {"rounds": 0})
        rg.add_node("attempt", self._attempt_node)  # type: ignore[arg-type]  # takes a Send payload
        rg.add_node("gate", self._gate)
        rg.add_node("compare", self._compare)
        rg.add_edge(START, "start")
        rg.add_conditional_edges("start", fan_out, ["attempt"])
        rg.add_edge("attempt", "gate")
        rg.add_conditional_edges("gate", after_gate, ["attempt", "compare"])
        rg.add_edge("compare", END)
        return rg.compile(checkpointer=saver), attempt_graph

    def _cfg(self, thread: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread}, "recursion_limit": RECURSION_LIMIT,
                "max_concurrency": max(int(self.config.get("concurrency") or 1), 1)}

    def attempt_cfg(self, attempt_id: str) -> dict[str, Any]:
        return self._cfg(f"{self.run_id}/{attempt_id}")

    def finished(self) -> bool:
        snap = self.run_graph.get_state(self._cfg(self.run_id))
        return bool(snap.values) and not snap.next and not snap.interrupts

    def has_checkpoint(self) -> bool:
        return bool(self.run_graph.get_state(self._cfg(self.run_id)).values)

    # -- run graph nodes -------------------------------------------------------
    def _attempt_node(self, inp: dict[str, Any]) -> dict[str, Any]:
        from langgraph.types import Command

        attempt_id = inp["attempt_id"]
        cfg = self.attempt_cfg(attempt_id)
        snap = self.attempt_graph.get_state(cfg)
        payload: Any
        if snap.interrupts and inp.get("resume"):
            answer = bool(inp["resume"].get(snap.interrupts[0].id, False))
            self._audit_question(attempt_id, snap.interrupts[0].value or {}, "allow" if answer else "deny")
            payload = Command(resume=answer)
        elif not snap.values:
            payload = {"attempt_id": attempt_id, "iteration": 0, "active_s": 0.0}
        elif snap.next or snap.interrupts:
            payload = None
        else:
            return {"results": {attempt_id: _summary(snap.values)}}
        if snap.values:  # resuming: it may have been marked cancelled or waiting meanwhile
            self._set_attempt(attempt_id, status=AttemptStatus.RUNNING, stop_reason=None)
        try:
            self.attempt_graph.invoke(payload, cfg)
        except (_Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            from langgraph.errors import GraphBubbleUp

            if isinstance(exc, GraphBubbleUp) or self.cancel.is_set():
                raise
            # an infrastructure failure (git, store, sandbox) ends this attempt, not the whole run
            reason = exc.message if isinstance(exc, LoopmeterError) else f"{type(exc).__name__}: {exc}"
            self._set_attempt(attempt_id, status=AttemptStatus.ERROR, stop_reason=f"error: {reason}"[:2000],
                              ended_at=utcnow())
            self.emit(attempt_id, "done", status=AttemptStatus.ERROR.value, stop_reason=reason)
            return {"results": {attempt_id: {"status": AttemptStatus.ERROR.value, "stop_reason": reason}}}
        if self.cancel.is_set():
            raise _Cancelled()
        snap = self.attempt_graph.get_state(cfg)
        if snap.interrupts:
            questions = [{**(i.value or {}), "id": i.id} for i in snap.interrupts]
            for q in questions:
                self._audit_question(attempt_id, q, "ask")
            self._set_attempt(attempt_id, status=AttemptStatus.WAITING)
            self.emit(attempt_id, "waiting")
            return {"results": {attempt_id: {"status": AttemptStatus.WAITING.value, "questions": questions}}}
        return {"results": {attempt_id: _summary(snap.values)}}

    def _audit_question(self, attempt_id: str, question: dict[str, Any], decision: str) -> None:
        """The audit log gets the policy's `ask` and then the person's answer (action "approve")."""
        audit = getattr(self.runner.inner, "audit", None)
        if audit is None:
            return
        asked = decision == "ask"
        audit.append(layer="policy", action=question.get("action", "") if asked else "approve",
                     decision=decision, target=str(question.get("target", ""))[:2000],
                     actor=f"agent:{question.get('agent')}" if asked else f"user:{self.settings.user}",
                     rule_id=question.get("rule_id"), policy_sha256=self.policy.sha256, run_id=self.run_id,
                     attempt_id=attempt_id, detail={"question": question.get("action"),
                                                    "iteration": question.get("iteration")})

    def _gate(self, state: RunState) -> dict[str, Any]:
        from langgraph.types import interrupt

        questions = [q for r in state.get("results", {}).values() if r.get("status") == AttemptStatus.WAITING
                     for q in r.get("questions", [])]
        if not questions:
            return {"answers": {}}
        answers = interrupt({"approvals": questions})
        by_attempt: dict[str, dict[str, bool]] = {}
        for q in questions:
            by_attempt.setdefault(q["attempt_id"], {})[q["id"]] = bool((answers or {}).get(q["id"], False))
        return {"answers": by_attempt, "rounds": 1}

    def _compare(self, state: RunState) -> dict[str, Any]:
        from loopmeter.store import Attempt, Run

        with self.store.session() as s:
            from sqlmodel import select

            rows = list(s.exec(select(Attempt).where(Attempt.run_id == self.run_id)))
        ranked = sorted((a for a in rows if a.role == "primary"), key=_rank)
        winner = ranked[0].id if ranked and ranked[0].status == AttemptStatus.PASSED else None
        run = self.store.get(Run, self.run_id)
        if run is not None:
            run.winner_attempt_id = winner
            run.status = RunStatus.PASSED if winner else RunStatus.FAILED
            run.ended_at = utcnow()
            self.store.save(run)
        self.emit(None, "finished", winner=winner)
        return {"winner": winner}

    # -- driving ----------------------------------------------------------------
    def drive(self, payload: Any) -> RunResult:
        from loopmeter.store import Run

        run = self.store.get(Run, self.run_id)
        self._active_before = run.active_s if run is not None else None
        self._drive_t0 = time.monotonic()
        self._set_run(status=RunStatus.RUNNING, ended_at=None)
        restore = _install_sigint(self.cancel_all)
        try:
            while True:
                try:
                    self.run_graph.invoke(payload, self._cfg(self.run_id))
                except (_Cancelled, KeyboardInterrupt) as exc:
                    self.cancel_all()
                    self._set_run(status=RunStatus.CANCELLED, ended_at=utcnow())
                    self._mark_unfinished(AttemptStatus.CANCELLED)
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    return self.result([])
                pending = self.pending()
                if not pending:
                    return self.result([])
                if self.approver is None:
                    self._set_run(status=RunStatus.WAITING)
                    return self.result(pending)
                payload = self.resume_command(_fill(pending, self.approver(pending)))
        finally:
            restore()
            with contextlib.suppress(Exception):  # never hide the error that ended the drive
                self.save_active_time()
            self.close()

    def close(self) -> None:
        self.telemetry.flush()
        self.telemetry.shutdown()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        _active.pop(self.run_id, None)

    def cancel_all(self) -> None:
        self.cancel.set()
        for event in list(self.stop_events.values()):
            event.set()

    def git_layout(self, workdir: Path) -> Any:
        """The git layout of one of this run's worktrees, from the repository's own records."""
        from loopmeter.hostgit import worktree_layout

        key = os.path.abspath(workdir)
        with self._lock:
            if key not in self._layouts:
                try:
                    self._layouts[key] = worktree_layout(Path(self.config["repo"]), Path(key))
                except LoopmeterError:
                    self._layouts[key] = None  # not a worktree of the run's repository: the runner checks it
            return self._layouts[key]

    def stop_event(self, attempt_id: str) -> threading.Event:
        with self._lock:
            event = self.stop_events.setdefault(attempt_id, threading.Event())
        if self.cancel.is_set():
            event.set()
        return event

    def _check_live_budgets(self, attempt_id: str) -> None:
        """Stop an agent mid-step as soon as its stored spend reaches a USD or token budget."""
        usd, tokens, _ = self.spent(attempt_id)
        stop = exceeded(Budgets(None, self.budgets.max_usd, self.budgets.max_tokens, None),
                          Spent(0, usd, tokens, 0.0), "attempt")
        targets = [attempt_id]
        if stop is None and self.run_budgets is not None and (
                self.run_budgets.max_usd is not None or self.run_budgets.max_tokens is not None):
            run_usd, run_tokens, _ = self.spent(None)
            stop = exceeded(Budgets(None, self.run_budgets.max_usd, self.run_budgets.max_tokens, None),
                              Spent(0, run_usd, run_tokens, 0.0), "run")
            targets = list(self.stop_events)
        if stop is not None:
            for target in targets:
                self.stop_reasons.setdefault(target, stop)
                self.stop_event(target).set()

    def resume_command(self, answers: dict[str, bool]) -> Any:
        """Answers to the gate's interrupt ({question id: yes?}), addressed by the gate's interrupt id."""
        from langgraph.types import Command

        snap = self.run_graph.get_state(self._cfg(self.run_id))
        return Command(resume={intr.id: answers for intr in snap.interrupts})

    def pending(self) -> list[dict[str, Any]]:
        snap = self.run_graph.get_state(self._cfg(self.run_id))
        out = []
        for intr in snap.interrupts:
            out.extend((intr.value or {}).get("approvals", []))
        return out

    def result(self, pending: list[dict[str, Any]]) -> RunResult:
        from sqlmodel import select

        from loopmeter.store import Attempt, Run

        run = self.store.get(Run, self.run_id)
        with self.store.session() as s:
            rows = list(s.exec(select(Attempt).where(Attempt.run_id == self.run_id).order_by(Attempt.id)))
        return RunResult(run_id=self.run_id, status=run.status if run else RunStatus.ERROR,
                         attempts=[attempt_record(a) for a in rows],
                         winner=run.winner_attempt_id if run else None, approvals=pending)

    # -- records ----------------------------------------------------------------
    def emit(self, attempt_id: str | None, state: str, **extra: Any) -> None:
        if self.on_event is None:
            return
        event = {"run_id": self.run_id, "attempt_id": attempt_id, "state": state, **extra}
        try:
            self.on_event(event)
        except Exception:  # a progress display must never break a run
            pass

    def _set_run(self, **fields: Any) -> None:
        from loopmeter.store import Run

        with self._lock:
            run = self.store.get(Run, self.run_id)
            if run is not None:
                for k, v in fields.items():
                    setattr(run, k, v)
                self.store.save(run)

    def _set_attempt(self, attempt_id: str, **fields: Any) -> None:
        from loopmeter.store import Attempt

        with self._lock:
            row = self.store.get(Attempt, attempt_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)
                self.store.save(row)

    def _mark_unfinished(self, status: AttemptStatus) -> None:
        from sqlmodel import select

        from loopmeter.store import Attempt

        with self.store.session() as s:
            for row in s.exec(select(Attempt).where(Attempt.run_id == self.run_id)):
                if not AttemptStatus(row.status).finished:
                    row.status = status
                    row.stop_reason = "interrupted (resume with `loopmeter resume`)"
                    s.add(row)
            s.commit()

    def spent(self, attempt_id: str | None) -> tuple[float, int, int]:
        """(usd, tokens, unpriced calls) stored for an attempt, or for the whole run when None."""
        from sqlalchemy import func, select

        from loopmeter.store import Usage

        c = Usage.__table__.c  # type: ignore[attr-defined]
        tokens = (func.coalesce(c.input_tokens, 0) + func.coalesce(c.output_tokens, 0)
                  + func.coalesce(c.cache_read_tokens, 0) + func.coalesce(c.cache_write_tokens, 0))
        stmt = select(func.coalesce(func.sum(c.cost_usd), 0.0), func.coalesce(func.sum(tokens), 0),
                      func.count() - func.count(c.cost_usd)).where(c.run_id == self.run_id)
        if attempt_id is not None:
            stmt = stmt.where(c.attempt_id == attempt_id)
        with self.store.engine.connect() as conn:
            usd, total, unpriced = conn.execute(stmt).one()
        return float(usd or 0.0), int(total or 0), int(unpriced or 0)

    def totals(self, attempt_id: str) -> dict[str, Any]:
        """Attempt totals from the stored usage rows (so a replayed step cannot count twice)."""
        from sqlalchemy import func, select

        from loopmeter.store import Usage

        c = Usage.__table__.c  # type: ignore[attr-defined]
        kinds = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
        cols = [func.sum(c[k]) for k in kinds]  # NULL when no row reported that kind
        stmt = select(*cols, func.sum(c.cost_usd), func.count(), func.count(c.cost_usd)).where(
            c.attempt_id == attempt_id)
        with self.store.engine.connect() as conn:
            row = conn.execute(stmt).one()
        calls, priced = int(row[-2] or 0), int(row[-1] or 0)
        cost = row[-3]
        # tokens an agent never reported stay missing (None), not 0; no calls at all is 0
        out: dict[str, Any] = {k: (int(v) if v is not None else (0 if calls == 0 else None))
                               for k, v in zip(kinds, row[:5], strict=True)}
        # no calls at all costs nothing; calls that all lack a price are unpriced, not $0
        out["cost_usd"] = 0.0 if calls == 0 else (float(cost) if cost is not None else None)
        out["unpriced_calls"] = calls - priced
        return out

    def usage_sink(self, attempt_id: str) -> Callable[[Any], None]:
        """What a backend calls as each model call is known: store it, show the running totals."""

        def add(row: Any) -> None:
            row.run_id, row.attempt_id = self.run_id, attempt_id
            self.store.add_usage([row])
            self._check_live_budgets(attempt_id)
            if self.on_event is not None:
                usd, tokens, unpriced = self.spent(attempt_id)
                self.emit(attempt_id, "act", tokens=tokens, cost_usd=None if unpriced and not usd else usd)

        return add

    def _upsert_iteration(self, attempt_id: str, n: int, **fields: Any) -> None:
        from sqlmodel import select

        from loopmeter.store import Iteration

        with self._lock, self.store.session() as s:
            row = s.exec(select(Iteration).where(Iteration.attempt_id == attempt_id, Iteration.n == n)).first()
            if row is None:
                row = Iteration(attempt_id=attempt_id, n=n)
            for k, v in fields.items():
                setattr(row, k, v)
            s.add(row)
            s.commit()

    def run_wall_s(self) -> float:
        """Seconds the run has been driven: by earlier `run`/`resume` calls (as recorded) and by
        this one. Hours spent waiting for an approval, or crashed, do not count. A run recorded
        before the store kept this falls back to the time since it started."""
        if self._active_before is None:
            from loopmeter.store import Run, as_utc

            run = self.store.get(Run, self.run_id)
            if run is None or run.started_at is None:
                return 0.0
            return (utcnow() - as_utc(run.started_at)).total_seconds()
        return self._active_before + (time.monotonic() - self._drive_t0)

    def save_active_time(self) -> None:
        """Record the driven time (after every iteration and when a drive ends: a crash loses
        at most the step it was in)."""
        if self._active_before is not None:
            self._set_run(active_s=round(self.run_wall_s(), 3))


# -- the attempt graph's steps --------------------------------------------------------


class _AttemptSteps:
    def __init__(self, rt: _Runtime):
        self.rt = rt

    def _row(self, attempt_id: str) -> Any:
        from loopmeter.store import Attempt

        return self.rt.store.get(Attempt, attempt_id)

    def prepare(self, state: AttemptState) -> dict[str, Any]:
        from loopmeter.agents.worktree import create_worktree

        rt = self.rt
        row = self._row(state["attempt_id"])
        worktree = create_worktree(Path(rt.config["repo"]), row.base_commit, row.branch, Path(row.worktree))
        rt._set_attempt(row.id, status=AttemptStatus.RUNNING, started_at=row.started_at or utcnow(), worktree=str(worktree))
        rt.emit(row.id, "prepared", agent=row.agent, model=row.model, branch=row.branch)
        return {"iteration": state.get("iteration", 0), "active_s": state.get("active_s", 0.0)}

    def _remaining(self, state: AttemptState, attempt_id: str) -> tuple[float | None, float | None, int | None]:
        rt = self.rt
        usd, tokens, _ = rt.spent(attempt_id)
        secs, left_usd, left_tok = remaining(rt.budgets, Spent(state.get("iteration", 0), usd, tokens,
                                                              state.get("active_s", 0.0)))
        if rt.run_budgets is not None:
            run_usd, run_tokens, _ = rt.spent(None)
            rs, ru, rtk = remaining(rt.run_budgets, Spent(0, run_usd, run_tokens, rt.run_wall_s()))
            secs, left_usd = tighter(secs, rs), tighter(left_usd, ru)
            left_tok = None if left_tok is None and rtk is None else int(tighter(left_tok, rtk) or 0)
        return secs, left_usd, left_tok

    def act(self, state: AttemptState) -> dict[str, Any]:
        from langgraph.errors import GraphBubbleUp
        from langgraph.types import interrupt

        from loopmeter.agents.base import StepContext, StepResult, get_backend
        from loopmeter.agents.checks import remove_task_tests
        from loopmeter.telemetry.otel import AGENT_NAME, ATTEMPT_ID, OP, REQUEST_MODEL, RUN_ID

        rt = self.rt
        row = self._row(state["attempt_id"])
        n = state.get("iteration", 0) + 1
        actor = f"agent:{row.agent}"
        decision = rt.policy.decide("agent", row.agent, actor)
        if decision.decision == "deny":
            return {"iteration": n - 1, "last_act": {"denied": f"policy {decision.rule_id}: {decision.reason}"}}
        if decision.decision == "ask":
            question = {"attempt_id": row.id, "agent": row.agent, "action": "agent", "target": row.agent,
                        "rule_id": decision.rule_id, "reason": decision.reason, "iteration": n}
            if not interrupt(question):
                return {"iteration": n - 1, "last_act": {"denied": f"a person denied agent {row.agent}"}}

        def approve(action: str, target: str) -> bool:
            d = rt.policy.decide(action, target, actor)
            return bool(interrupt({"attempt_id": row.id, "agent": row.agent, "action": action, "target": target,
                                   "rule_id": d.rule_id, "reason": d.reason, "iteration": n}))

        worktree = Path(row.worktree)
        remove_task_tests(worktree, rt.task.tests_dir if rt.task else None)
        secs, usd, tokens = self._remaining(state, row.id)
        spent_before = rt.spent(row.id)
        rt._upsert_iteration(row.id, n, started_at=utcnow())
        rt.emit(row.id, "act", iteration=n)
        state_dir = rt.settings.home / "state" / rt.run_id / row.id
        stop = rt.stop_event(row.id)
        if not rt.cancel.is_set():
            stop.clear()
            rt.stop_reasons.pop(row.id, None)
        ctx = StepContext(
            run_id=rt.run_id, attempt_id=row.id, agent=row.agent, model=row.model, workdir=worktree,
            instruction=rt.config["instruction"], iteration=n, feedback=state.get("feedback"), task=rt.task,
            sandbox=rt.runner, policy=rt.policy, timeout_s=secs, max_usd=usd, max_tokens=tokens,
            api_base=rt.config.get("api_base"), env=dict(rt.config.get("env") or {}), cancel=stop,
            on_usage=rt.usage_sink(row.id), user=row.user, project=row.project, approve=approve,
            state_dir=state_dir, actor=actor, tracer=rt.telemetry.tracer,
        )
        started = time.monotonic()
        attrs = {OP: "invoke_agent", AGENT_NAME: row.agent, RUN_ID: rt.run_id, ATTEMPT_ID: row.id,
                 "loopmeter.iteration": n}
        if row.model:
            attrs[REQUEST_MODEL] = row.model
        with rt.telemetry.tracer.start_as_current_span(f"invoke_agent {row.agent}", attributes=attrs) as span:
            try:
                result = get_backend(row.agent).step(ctx)
            except GraphBubbleUp:
                raise
            except LoopmeterError as exc:
                result = StepResult(exit_code=1, error=exc.message, error_kind="infra")
            except Exception as exc:
                result = StepResult(exit_code=1, error=f"{type(exc).__name__}: {exc}", error_kind="agent")
            span.set_attribute("loopmeter.exit_code", result.exit_code)
            if result.error:
                span.set_attribute("error.type", result.error_kind or "agent")
        if rt.cancel.is_set():
            raise _Cancelled()
        halt: Stop | None = None
        if stop.is_set() and row.id in rt.stop_reasons:  # a budget spent mid-step stopped the agent
            halt = rt.stop_reasons[row.id]
            result.stopped_by = halt.reason
        elif result.stopped_by:
            halt = backend_stop(result.stopped_by)
        for u in result.usage:  # rows the backend did not already hand over live
            u.run_id, u.attempt_id = rt.run_id, row.id
        rt.store.add_usage(result.usage)
        elapsed = time.monotonic() - started
        rt._upsert_iteration(row.id, n, act_exit=result.exit_code,
                             act_summary=(result.error or result.summary or "")[:4000])
        last_act = {"exit": result.exit_code, "error": result.error, "error_kind": result.error_kind,
                    "stopped_by": result.stopped_by, "stop_kind": halt.kind.value if halt else None,
                    "stop_reason": halt.reason if halt else None}
        return {"iteration": n, "active_s": state.get("active_s", 0.0) + elapsed, "last_act": last_act,
                "spent_before": [spent_before[0], spent_before[1], spent_before[2]]}

    def verify(self, state: AttemptState) -> dict[str, Any]:
        from loopmeter.agents.checks import output_tail, task_tests_in

        rt = self.rt
        last_act = state.get("last_act") or {}
        if last_act.get("denied") or last_act.get("stopped_by") or last_act.get("error_kind") in (
                "auth", "not_installed", "infra"):
            return {"last_check": {"skipped": True}}
        row = self._row(state["attempt_id"])
        worktree = Path(row.worktree)
        secs, _, _ = self._remaining(state, row.id)
        if rt.task is not None:
            secs = tighter(secs, rt.task.time_limit_s)
        rt.emit(row.id, "verify", iteration=state.get("iteration", 0))
        started = time.monotonic()
        with task_tests_in(worktree, rt.task.tests_dir if rt.task else None):
            res = rt.runner.run(["bash", "-c", rt.config["check"]], workdir=worktree, policy=rt.policy,
                                role="check", actor="check", timeout_s=secs, run_id=rt.run_id,
                                attempt_id=row.id, cancel=rt.cancel, env=dict(CHECK_ENV))
        if rt.cancel.is_set():
            raise _Cancelled()
        elapsed = time.monotonic() - started
        active = state.get("active_s", 0.0) + elapsed
        passed = res.exit_code == 0 and not res.timed_out
        tail = output_tail(res.stdout, res.stderr)
        n = state.get("iteration", 0)
        usd, tokens, unpriced = rt.spent(row.id)
        before: list[Any] = state.get("spent_before") or [0.0, 0, 0]
        b_usd, b_tokens, b_unpriced = float(before[0]), int(before[1]), int(before[2])
        # an iteration whose calls all lack a price has no cost (unpriced), not $0
        it_cost = None if unpriced > b_unpriced and usd == b_usd else round(usd - b_usd, 8)
        rt._upsert_iteration(row.id, n, check_exit=res.exit_code, check_passed=passed, check_output_tail=tail,
                             ended_at=utcnow(), cost_usd=it_cost, tokens=tokens - b_tokens)
        update: dict[str, Any] = {"active_s": active, "feedback": None if passed else tail,
                                  "last_check": {"exit": res.exit_code, "passed": passed,
                                                 "timed_out": res.timed_out}}
        if state.get("time_to_signal_s") is None:
            update["time_to_signal_s"] = round(active, 3)
        if passed and state.get("time_to_green_s") is None:
            update["time_to_green_s"] = round(active, 3)
            update["iterations_to_green"] = n
        rt.emit(row.id, "checked", iteration=n, passed=passed, tokens=tokens, cost_usd=usd, elapsed_s=active)
        return update

    def decide(self, state: AttemptState) -> dict[str, Any]:
        rt = self.rt
        last_act = state.get("last_act") or {}
        last_check = state.get("last_check") or {}
        attempt_id = state["attempt_id"]
        if last_check.get("passed"):
            return {"status": AttemptStatus.PASSED.value, "stop_reason": "check passed"}
        if last_act.get("denied"):
            return {"status": AttemptStatus.CANCELLED.value, "stop_reason": f"denied: {last_act['denied']}"}
        if last_act.get("error_kind") in ("auth", "not_installed", "infra"):
            return {"status": AttemptStatus.ERROR.value,
                    "stop_reason": f"{last_act['error_kind']}: {last_act.get('error')}"}
        usd, tokens, _ = rt.spent(attempt_id)
        rt.save_active_time()
        spent = Spent(state.get("iteration", 0), usd, tokens, state.get("active_s", 0.0))
        stop = exceeded(rt.budgets, spent, "attempt")
        if stop is None and rt.run_budgets is not None:
            run_usd, run_tokens, _ = rt.spent(None)
            stop = exceeded(rt.run_budgets, Spent(0, run_usd, run_tokens, rt.run_wall_s()), "run")
        if stop is None and spent.iterations >= HARD_MAX_ITERS:
            stop = Stop(StopKind.ITERATIONS,
                        f"budget: iterations {spent.iterations} >= {HARD_MAX_ITERS} (loopmeter's hard cap)")
        if stop is None and last_act.get("stopped_by"):
            stop = _act_stop(last_act)
        if stop is None:
            return {}
        return {"status": stop.kind.status.value, "stop_reason": stop.reason}

    def finish(self, state: AttemptState) -> dict[str, Any]:
        from loopmeter.agents.worktree import commit_all, diffstat

        rt = self.rt
        row = self._row(state["attempt_id"])
        head = diff = None
        repo, worktree = Path(rt.config["repo"]), Path(row.worktree)
        try:
            head = commit_all(repo, worktree, f"loopmeter: {row.agent} attempt {row.id}\n\nLoopmeter-Run: "
                              f"{rt.run_id}\nLoopmeter-Attempt: {row.id}")
            diff = diffstat(repo, worktree, row.base_commit)
        except Exception as exc:  # a git failure must not lose the attempt's record
            state = {**state, "stop_reason": f"{state.get('stop_reason')}; commit failed: {exc}"}
        totals = rt.totals(row.id)
        rt._set_attempt(
            row.id, status=state.get("status") or AttemptStatus.FAILED, stop_reason=state.get("stop_reason"),
            iterations=state.get("iteration", 0), wall_s=round(state.get("active_s", 0.0), 3),
            time_to_signal_s=state.get("time_to_signal_s"), time_to_green_s=state.get("time_to_green_s"),
            iterations_to_green=state.get("iterations_to_green"), head_commit=head,
            diffstat=json.dumps(diff) if diff is not None else None, ended_at=utcnow(), **totals,
        )
        rt.emit(row.id, "done", status=state.get("status"), stop_reason=state.get("stop_reason"))
        return {}


def _act_stop(last_act: dict[str, Any]) -> Stop:
    """The limit that ended the last act (a checkpoint from before stop kinds were kept has only the code)."""
    if last_act.get("stop_kind"):
        return Stop(StopKind(last_act["stop_kind"]), last_act["stop_reason"])
    return backend_stop(last_act["stopped_by"])


def _summary(values: dict[str, Any]) -> dict[str, Any]:
    return {"status": values.get("status") or AttemptStatus.FAILED.value, "stop_reason": values.get("stop_reason")}


def _rank(a: Any) -> tuple[Any, ...]:
    diff = json.loads(a.diffstat) if a.diffstat else {}
    size = int(diff.get("insertions", 0)) + int(diff.get("deletions", 0))
    cost = a.cost_usd
    return (a.status != AttemptStatus.PASSED, cost is None, cost or 0.0, a.wall_s or 0.0, size, a.id)


def attempt_record(a: Any) -> AttemptRecord:
    return AttemptRecord(
        id=a.id, agent=a.agent, model=a.model, role=a.role, status=a.status, stop_reason=a.stop_reason,
        iterations=a.iterations, input_tokens=a.input_tokens, output_tokens=a.output_tokens,
        cache_read_tokens=a.cache_read_tokens, cache_write_tokens=a.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens, cost_usd=a.cost_usd, unpriced_calls=a.unpriced_calls,
        wall_s=a.wall_s, time_to_green_s=a.time_to_green_s, time_to_signal_s=a.time_to_signal_s,
        iterations_to_green=a.iterations_to_green, branch=a.branch, worktree=a.worktree,
        head_commit=a.head_commit, diffstat=json.loads(a.diffstat) if a.diffstat else None,
    )


def _load_task(path: str | None) -> Task | None:
    if not path:
        return None
    from loopmeter.evals.task import load_task

    return load_task(Path(path))


def _install_sigint(cancel: Callable[[], None]) -> Callable[[], Any]:
    """Ctrl-C cancels the run first, so sandboxed processes are killed at once."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        cancel()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


class _TracedRunner:
    """The sandbox runner, with a `sandbox.exec` span around every command and the git
    layout of the run's worktrees from loopmeter's records (see hostgit)."""

    def __init__(self, inner: Any, tracer: Any, git_layout: Callable[[Path], Any]):
        self.inner = inner
        self.tracer = tracer
        self.git_layout = git_layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, argv: list[str], **kw: Any) -> Any:
        from loopmeter.telemetry.otel import ATTEMPT_ID, RUN_ID

        attrs = {"loopmeter.sandbox.role": kw.get("role", ""), "loopmeter.sandbox.actor": kw.get("actor", ""),
                 "process.command": os.path.basename(argv[0]) if argv else ""}
        if kw.get("run_id"):
            attrs[RUN_ID] = kw["run_id"]
        if kw.get("attempt_id"):
            attrs[ATTEMPT_ID] = kw["attempt_id"]
        if kw.get("git") is None and kw.get("workdir") is not None:
            kw["git"] = self.git_layout(Path(kw["workdir"]))
        with self.tracer.start_as_current_span("sandbox.exec", attributes=attrs) as span:
            res = self.inner.run(argv, **kw)
            span.set_attribute("process.exit.code", res.exit_code)
            if res.timed_out or res.killed_reason:
                span.set_attribute("loopmeter.sandbox.killed", res.killed_reason or "timeout")
            return res
