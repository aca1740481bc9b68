"""The attempt graph's steps: prepare -> act -> verify -> decide -> (act | finish)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.agents.budget import Spent, Stop, backend_stop, exceeded, remaining, tighter
from loopmeter.agents.loop_records import HARD_MAX_ITERS, AttemptState, _Cancelled
from loopmeter.errors import LoopmeterError
from loopmeter.records import utcnow
from loopmeter.vocab import AttemptStatus, ErrorKind, StepErrorKind, StopKind

if TYPE_CHECKING:
    from loopmeter.agents.loop_runtime import _Runtime

# a stale .pyc written by one check (same size, same second) would hide the agent's next edit
CHECK_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


class _AttemptSteps:
    def __init__(self, rt: _Runtime):
        self.rt = rt

    def _row(self, attempt_id: str) -> Any:
        from loopmeter.store import Attempt

        return self.rt.store.get(Attempt, attempt_id)

    def _record_sessions(self, row: Any) -> None:
        """The sessions of the attempt's usage rows (live ones included) at the run's place:
        the attempt's worktree, branch and base commit, the run's repository."""
        from loopmeter.outcomes.identity import find_checkout

        checkout = find_checkout(str(Path(self.rt.config["repo"]).absolute()))
        self.rt.store.add_attempt_sessions(row.id, cwd=row.worktree, branch=row.branch, commit=row.base_commit,
                                           repo=checkout.identity if checkout else None,
                                           repo_url=checkout.origin if checkout else None)

    def prepare(self, state: AttemptState) -> dict[str, Any]:
        from loopmeter.agents.worktree import create_worktree

        rt = self.rt
        row = self._row(state["attempt_id"])
        worktree = create_worktree(rt.repo_path, row.base_commit, row.branch, rt.worktree_of(row))
        rt._set_attempt(row.id, status=AttemptStatus.RUNNING, started_at=row.started_at or utcnow(),
                        worktree=row.worktree if rt.remote else str(worktree))
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

        worktree = rt.worktree_of(row)
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
                result = StepResult(exit_code=1, error=exc.message, error_kind=StepErrorKind.INFRA)
            except Exception as exc:
                result = StepResult(exit_code=1, error=f"{type(exc).__name__}: {exc}",
                                    error_kind=StepErrorKind.AGENT)
            span.set_attribute("loopmeter.exit_code", result.exit_code)
            if result.error:
                span.set_attribute("error.type", (result.error_kind or StepErrorKind.AGENT).value)
        if rt.cancel.is_set():
            raise _Cancelled()
        halt: Stop | None = None
        if stop.is_set() and row.id in rt.stop_reasons:  # a budget spent mid-step stopped the agent
            halt = rt.stop_reasons[row.id]
            result.stopped_by = halt.reason
        elif result.stopped_by:
            halt = backend_stop(result.stopped_by, result.stop_kind)
        for u in result.usage:  # rows the backend did not already hand over live
            u.run_id, u.attempt_id = rt.run_id, row.id
        rt.store.add_usage(result.usage)
        self._record_sessions(row)
        elapsed = time.monotonic() - started
        rt._upsert_iteration(row.id, n, act_exit=result.exit_code,
                             act_summary=(result.error or result.summary or "")[:4000])
        # the checkpoint keeps plain strings: the StrEnum's value, read back by _attempt_error
        error_kind = StepErrorKind(result.error_kind).value if result.error_kind else None
        last_act = {"exit": result.exit_code, "error": result.error, "error_kind": error_kind,
                    "stopped_by": result.stopped_by, "stop_kind": halt.kind.value if halt else None,
                    "stop_reason": halt.reason if halt else None}
        return {"iteration": n, "active_s": state.get("active_s", 0.0) + elapsed, "last_act": last_act,
                "spent_before": [spent_before[0], spent_before[1], spent_before[2]]}

    def verify(self, state: AttemptState) -> dict[str, Any]:
        from loopmeter.agents.checks import output_tail, task_tests_in

        rt = self.rt
        last_act = state.get("last_act") or {}
        if last_act.get("denied") or last_act.get("stopped_by") or _attempt_error(last_act):
            return {"last_check": {"skipped": True}}
        row = self._row(state["attempt_id"])
        worktree = rt.worktree_of(row)
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
        error = _attempt_error(last_act)
        if error is not None:  # the step failed in a way trying again will not mend
            return {"status": AttemptStatus.ERROR.value, "error_kind": error.value,
                    "stop_reason": f"{error}: {last_act.get('error')}"}
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
        repo, worktree = rt.repo_path, rt.worktree_of(row)
        try:
            head = commit_all(repo, worktree, f"loopmeter: {row.agent} attempt {row.id}\n\nLoopmeter-Run: "
                              f"{rt.run_id}\nLoopmeter-Attempt: {row.id}")
            diff = diffstat(repo, worktree, row.base_commit)
        except Exception as exc:  # a git failure must not lose the attempt's record
            state = {**state, "stop_reason": f"{state.get('stop_reason')}; commit failed: {exc}"}
        totals = rt.totals(row.id)
        rt._set_attempt(
            row.id, status=state.get("status") or AttemptStatus.FAILED, stop_reason=state.get("stop_reason"),
            error_kind=state.get("error_kind"),
            iterations=state.get("iteration", 0), wall_s=round(state.get("active_s", 0.0), 3),
            time_to_signal_s=state.get("time_to_signal_s"), time_to_green_s=state.get("time_to_green_s"),
            iterations_to_green=state.get("iterations_to_green"), head_commit=head,
            diffstat=json.dumps(diff) if diff is not None else None, ended_at=utcnow(), **totals,
        )
        rt.emit(row.id, "done", status=state.get("status"), stop_reason=state.get("stop_reason"))
        return {}


def _attempt_error(last_act: dict[str, Any]) -> ErrorKind | None:
    """The error the attempt ends with after the last act, if its failure ends it (auth, infra,
    not installed)."""
    kind = last_act.get("error_kind")
    return StepErrorKind(kind).attempt_error if kind else None


def _act_stop(last_act: dict[str, Any]) -> Stop:
    """The limit that ended the last act (a checkpoint from before stop kinds were kept has only the code)."""
    if last_act.get("stop_kind"):
        return Stop(StopKind(last_act["stop_kind"]), last_act["stop_reason"])
    return backend_stop(last_act["stopped_by"])


def _summary(values: dict[str, Any]) -> dict[str, Any]:
    return {"status": values.get("status") or AttemptStatus.FAILED.value, "stop_reason": values.get("stop_reason")}
