"""The runtime of one run: its store, policy, sandbox and telemetry, its graphs (loop_graph.py),
driving them to the end or to a question, and what the run records in the store as it goes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.agents.budget import Budgets, Spent, Stop, exceeded
from loopmeter.agents.loop_graph import build_graphs, open_checkpointer
from loopmeter.agents.loop_records import RECURSION_LIMIT, RunResult, _Cancelled, attempt_record
from loopmeter.agents.loop_sandbox import TracedRunner
from loopmeter.analytics.work import work_cost
from loopmeter.errors import LoopmeterError
from loopmeter.records import utcnow
from loopmeter.vocab import AttemptStatus, RunStatus

if TYPE_CHECKING:
    from loopmeter.config import Settings
    from loopmeter.executors.attempts import RemotePlace
    from loopmeter.store import Store
    from loopmeter.tasks import Task

_active: dict[str, _Runtime] = {}  # the runs this process drives, for cancel_run


def cancel_run(run_id: str) -> None:
    """Cancel a run driven by this process: its agents and checks are killed; resume continues it."""
    runtime = _active.get(run_id)
    if runtime is not None:
        runtime.cancel_all()


class _Runtime:
    def __init__(self, store: Store, settings: Settings, run_id: str, config: dict[str, Any], policy: Any,
                 on_event: Callable[[dict[str, Any]], None] | None,
                 approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None,
                 remote: RemotePlace | None = None):
        from loopmeter.sandbox import make_runner
        from loopmeter.telemetry.otel import setup

        self.store = store
        self.settings = settings
        self.run_id = run_id
        self.config = config
        self.policy = policy
        self.on_event = on_event
        self.approver = approver
        # set on a worker running one attempt of a run driven elsewhere (loopmeter/executors/attempts.py)
        self.remote = remote
        # set on the driver when its attempts run elsewhere (`--executor ray`): runs each attempt's graph
        self.executor: Any = None
        self.budgets = Budgets.from_dict(config["budgets"]) or Budgets()
        self.run_budgets = Budgets.from_dict(config.get("run_budgets"))
        self.cancel = threading.Event()  # the whole run: Ctrl-C or cancel_run
        # per attempt: set on cancel, or when a stored usage row spends a USD/token budget mid-step
        self.stop_events: dict[str, threading.Event] = {}
        self.stop_reasons: dict[str, Stop] = {}
        _active[run_id] = self
        self.telemetry = setup(store)
        self.runner = TracedRunner(make_runner(config["sandbox"], store=store), self.telemetry.tracer,
                                   self.git_layout)
        self.task = remote.task if remote is not None else _load_task(config.get("task"))
        self._lock = threading.Lock()
        self._layouts: dict[str, Any] = {}
        # the run's driven time: what earlier drives recorded, plus this one's (see run_wall_s)
        self._active_before: float | None = None
        self._drive_t0 = time.monotonic()
        conn, saver = open_checkpointer((remote.checkpoint_path if remote else None) or self.settings.checkpoint_path,
                                        store)
        self._conn: Any = conn  # closed by close()
        self.run_graph, self.attempt_graph = build_graphs(self, saver)

    @classmethod
    def load(cls, run_id: str, store: Store | None, settings: Settings | None,
             on_event: Callable[[dict[str, Any]], None] | None,
             approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None,
             remote: RemotePlace | None = None) -> _Runtime:
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
        if remote is not None and remote.policy is not None:  # a worker: the policy file the driver sent
            policy = remote.policy
        else:
            policy = load_policy(config.get("policy_ref") or run.policy or "default")
        if run.policy_sha256 and policy.sha256 != run.policy_sha256:
            raise LoopmeterError(f"the policy of run {run_id} changed since it started",
                                 hint=f"restore the policy with sha256 {run.policy_sha256} to resume it")
        return cls(store, settings, run_id, config, policy, on_event, approver, remote)

    @property
    def repo_path(self) -> Path:
        """The repository the attempts' worktrees belong to: the run's, or a worker's private copy."""
        return self.remote.repo if self.remote is not None else Path(self.config["repo"])

    def worktree_of(self, row: Any) -> Path:
        """Where an attempt's worktree is on this machine (its row keeps the driver's path)."""
        if self.remote is not None:
            return self.remote.worktrees / Path(row.worktree).name
        return Path(row.worktree)

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
        if self.executor is not None:
            self.executor.close()
            self.executor = None
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
                    self._layouts[key] = worktree_layout(self.repo_path, Path(key))
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

    def cost_so_far(self, attempt_id: str) -> tuple[float | None, int]:
        """(cost, tokens) of an attempt's stored calls, for the live display: the cost as every face
        shows it (`work_cost`), None (unpriced) while no call has a price."""
        usd, tokens, unpriced = self.spent(attempt_id)
        return work_cost(usd or None, unpriced), tokens  # spent() gives 0.0 when no call is priced

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
                cost, tokens = self.cost_so_far(attempt_id)
                self.emit(attempt_id, "act", tokens=tokens, cost_usd=cost)

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


def _fill(pending: list[dict[str, Any]], answers: dict[str, bool]) -> dict[str, bool]:
    return {q["id"]: bool(answers.get(q["id"], False)) for q in pending}


def _load_task(path: str | None) -> Task | None:
    if not path:
        return None
    from loopmeter.tasks import load_task

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
