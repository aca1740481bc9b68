"""The two graphs of a run, wired over one checkpointer, and the run graph's nodes.

The attempt graph (one thread per attempt): prepare -> act -> verify -> decide -> act again or
finish (the steps are in loop_steps.py). The run graph: start -> one `attempt` node per agent
(run in parallel) -> `gate`, which asks a person the questions the attempts are waiting on
and sends each attempt its answers, or -> `compare`, which ranks the attempts and names the
winner. Both graphs checkpoint into one SQLite file (into the store's database when the store is
PostgreSQL), so a run resumes where it stopped.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.agents.loop_records import AttemptState, RunState, _Cancelled
from loopmeter.agents.loop_steps import _AttemptSteps, _summary
from loopmeter.errors import LoopmeterError
from loopmeter.records import utcnow
from loopmeter.vocab import AttemptStatus, ErrorKind, RunStatus

if TYPE_CHECKING:
    from loopmeter.agents.loop_runtime import _Runtime


def open_checkpointer(path: Path, store: Any = None) -> tuple[Any, Any]:
    """The connection (the caller closes it) and the graphs' saver over it: the SQLite file at `path`,
    or the store's own database when the store is PostgreSQL, so any machine of a team can resume."""
    if store is not None and store.engine.url.get_backend_name() == "postgresql":
        return _postgres_checkpointer(store)
    from langgraph.checkpoint.sqlite import SqliteSaver

    from loopmeter.store.engine import ensure_wal

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    ensure_wal(conn)  # several runs in one eval open this file at once
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn, SqliteSaver(conn)


def _postgres_checkpointer(store: Any) -> tuple[Any, Any]:
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    except ImportError:
        raise LoopmeterError("loop checkpoints in PostgreSQL need langgraph-checkpoint-postgres",
                             hint="pip install 'loopmeter[postgres]'") from None
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    saver = PostgresSaver(conn)  # type: ignore[arg-type]  # a dict_row connection, as it documents
    # Several cells start at once: one creates the tables, the rest wait. They wait between statements
    # (try-lock, sleep), never inside one: setup's CREATE INDEX CONCURRENTLY waits for every open
    # statement, so a blocking pg_advisory_lock call would deadlock with it.
    deadline = time.monotonic() + 120
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(hashtext('loopmeter_checkpoints')) AS ok")
            row = cur.fetchone()
            if row and row["ok"]:
                break
            if time.monotonic() > deadline:
                conn.close()
                raise LoopmeterError("the loop's checkpoint tables are locked by another process for 120 s")
            time.sleep(0.2)
        try:
            saver.setup()
        finally:
            cur.execute("SELECT pg_advisory_unlock(hashtext('loopmeter_checkpoints'))")
    return conn, saver


def build_graphs(rt: _Runtime, saver: Any) -> tuple[Any, Any]:
    """(run graph, attempt graph), compiled over `saver`."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    steps = _AttemptSteps(rt)
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

    nodes = _RunNodes(rt)
    rg = StateGraph(RunState)
    rg.add_node("start", lambda s: {"rounds": 0})
    rg.add_node("attempt", nodes.attempt)  # type: ignore[arg-type]  # takes a Send payload
    rg.add_node("gate", nodes.gate)
    rg.add_node("compare", nodes.compare)
    rg.add_edge(START, "start")
    rg.add_conditional_edges("start", fan_out, ["attempt"])
    rg.add_edge("attempt", "gate")
    rg.add_conditional_edges("gate", after_gate, ["attempt", "compare"])
    rg.add_edge("compare", END)
    return rg.compile(checkpointer=saver), attempt_graph


class _RunNodes:
    """The run graph's nodes, over the run's runtime."""

    def __init__(self, rt: _Runtime):
        self.rt = rt

    def attempt(self, inp: dict[str, Any]) -> dict[str, Any]:
        from langgraph.types import Command

        attempt_id = inp["attempt_id"]
        cfg = self.rt.attempt_cfg(attempt_id)
        snap = self.rt.attempt_graph.get_state(cfg)
        payload: Any
        if snap.interrupts and inp.get("resume"):
            answer = bool(inp["resume"].get(snap.interrupts[0].id, False))
            self.audit_question(attempt_id, snap.interrupts[0].value or {}, "allow" if answer else "deny")
            payload = Command(resume=answer)
        elif not snap.values:
            payload = {"attempt_id": attempt_id, "iteration": 0, "active_s": 0.0}
        elif snap.next or snap.interrupts:
            payload = None
        else:
            return {"results": {attempt_id: _summary(snap.values)}}
        if snap.values:  # resuming: it may have been marked cancelled or waiting meanwhile
            self.rt._set_attempt(attempt_id, status=AttemptStatus.RUNNING, stop_reason=None, error_kind=None)
        try:
            if self.rt.executor is not None:  # on another machine (`--executor ray`); its branch comes back here
                self.rt.executor.run_attempt(self.rt, attempt_id, payload)
            else:
                self.rt.attempt_graph.invoke(payload, cfg)
        except (_Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            from langgraph.errors import GraphBubbleUp

            if isinstance(exc, GraphBubbleUp) or self.rt.cancel.is_set():
                raise
            # an infrastructure failure (git, store, sandbox) ends this attempt, not the whole run
            reason = exc.message if isinstance(exc, LoopmeterError) else f"{type(exc).__name__}: {exc}"
            self.rt._set_attempt(attempt_id, status=AttemptStatus.ERROR, error_kind=ErrorKind.INFRA,
                                 stop_reason=f"error: {reason}"[:2000], ended_at=utcnow())
            self.rt.emit(attempt_id, "done", status=AttemptStatus.ERROR.value, stop_reason=reason)
            return {"results": {attempt_id: {"status": AttemptStatus.ERROR.value, "stop_reason": reason}}}
        if self.rt.cancel.is_set():
            raise _Cancelled()
        snap = self.rt.attempt_graph.get_state(cfg)
        if snap.interrupts:
            questions = [{**(i.value or {}), "id": i.id} for i in snap.interrupts]
            for q in questions:
                self.audit_question(attempt_id, q, "ask")
            self.rt._set_attempt(attempt_id, status=AttemptStatus.WAITING)
            self.rt.emit(attempt_id, "waiting")
            return {"results": {attempt_id: {"status": AttemptStatus.WAITING.value, "questions": questions}}}
        return {"results": {attempt_id: _summary(snap.values)}}

    def audit_question(self, attempt_id: str, question: dict[str, Any], decision: str) -> None:
        """The audit log gets the policy's `ask` and then the person's answer (action "approve")."""
        audit = getattr(self.rt.runner.inner, "audit", None)
        if audit is None:
            return
        asked = decision == "ask"
        audit.append(layer="policy", action=question.get("action", "") if asked else "approve",
                     decision=decision, target=str(question.get("target", ""))[:2000],
                     actor=f"agent:{question.get('agent')}" if asked else f"user:{self.rt.settings.user}",
                     rule_id=question.get("rule_id"), policy_sha256=self.rt.policy.sha256, run_id=self.rt.run_id,
                     attempt_id=attempt_id, detail={"question": question.get("action"),
                                                    "iteration": question.get("iteration")})

    def gate(self, state: RunState) -> dict[str, Any]:
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

    def compare(self, state: RunState) -> dict[str, Any]:
        from sqlmodel import select

        from loopmeter.store import Attempt, Run

        with self.rt.store.session() as s:
            rows = list(s.exec(select(Attempt).where(Attempt.run_id == self.rt.run_id)))
        ranked = sorted((a for a in rows if a.role == "primary"), key=_rank)
        winner = ranked[0].id if ranked and ranked[0].status == AttemptStatus.PASSED else None
        run = self.rt.store.get(Run, self.rt.run_id)
        if run is not None:
            run.winner_attempt_id = winner
            run.status = RunStatus.PASSED if winner else RunStatus.FAILED
            run.ended_at = utcnow()
            self.rt.store.save(run)
        self.rt.emit(None, "finished", winner=winner)
        return {"winner": winner}


def _rank(a: Any) -> tuple[Any, ...]:
    diff = json.loads(a.diffstat) if a.diffstat else {}
    size = int(diff.get("insertions", 0)) + int(diff.get("deletions", 0))
    cost = a.cost_usd
    return (a.status != AttemptStatus.PASSED, cost is None, cost or 0.0, a.wall_s or 0.0, size, a.id)
