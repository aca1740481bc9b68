"""The `builtin` backend: a tool-calling coding agent over litellm.

litellm runs in the loopmeter process (on the host); the agent's commands run in
the sandbox through the policy. Every model response becomes one usage row keyed
`loop:<attempt>:<iteration>:<n>`. Responses are journalled in the step's state
directory, so a step re-run after a crash or an approval replays the calls it
already paid for instead of calling the model again.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from loopmeter.agents.base import StepContext, StepResult
from loopmeter.agents.budget import Budgets, Spent, Stop, exceeded
from loopmeter.agents.model_errors import model_error_kind
from loopmeter.agents.tools import SCHEMAS, Toolbox, clip, shell_argv
from loopmeter.records import UsageRow, utcnow
from loopmeter.vocab import ErrorKind, StepErrorKind, StopKind

if TYPE_CHECKING:
    from loopmeter.telemetry.otel import Telemetry

MAX_TURNS = 40
SYSTEM_PROMPT = (
    "You are a coding agent working in a git repository. Use the tools to inspect and change files, "
    "and run_command to run programs. Make the smallest change that completes the task. "
    "When you are done, answer with a short summary and no tool calls."
)
LOCAL_PROVIDERS = {"ollama", "ollama_chat", "hosted_vllm", "lm_studio", "llamafile", "openai_like"}


def _provider(model: str) -> str | None:
    return model.split("/", 1)[0] if "/" in model else None


def missing_key_hint(model: str | None, api_base: str | None, env: dict[str, str] | None = None) -> str | None:
    """Why this model cannot be called (no key), or None when it can."""
    from loopmeter.secrets import PROVIDERS, get_key

    if not model:
        return "builtin needs a model: --agent builtin:openai/gpt-4o-mini (or builtin:ollama/llama3 ...)"
    provider = _provider(model) or "openai"
    if api_base or provider in LOCAL_PROVIDERS or provider not in PROVIDERS:
        return None
    if provider == "openai" and (env or os.environ).get("OPENAI_BASE_URL"):
        return None
    key, _ = get_key(provider, env)
    if key:
        return None
    return f"no API key for {provider}: `loopmeter auth set {provider}` or export {PROVIDERS[provider]}"


class BuiltinBackend:
    name = "builtin"
    description = "loopmeter's own tool-calling agent over litellm (any model: builtin:PROVIDER/MODEL)"

    def __init__(self, telemetry: Telemetry | None = None):
        """`telemetry`: where each model call's GenAI metrics go (default: the process-wide one)."""
        self.telemetry = telemetry

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        return True, None

    def step(self, ctx: StepContext) -> StepResult:
        return _Session(ctx, self.telemetry).run()


class _Session:
    def __init__(self, ctx: StepContext, telemetry: Telemetry | None = None):
        self.ctx = ctx
        self.telemetry = telemetry
        self.model = ctx.model or ""
        self.provider = _provider(self.model)
        self.result = StepResult()
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self.started = time.monotonic()
        self.deadline = self.started + ctx.timeout_s if ctx.timeout_s is not None else None
        self.journal_path = (ctx.state_dir / f"iter-{ctx.iteration}.jsonl") if ctx.state_dir else None
        self.journal = self._load_journal()
        self.tracer = ctx.tracer
        self.toolbox = Toolbox(ctx.workdir, self._run_command, guard=self._path_rule)

    # -- journal (replay of paid-for responses) -----------------------------
    def _load_journal(self) -> list[dict[str, Any]]:
        if self.journal_path is None or not self.journal_path.is_file():
            return []
        entries = []
        for line in self.journal_path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line torn by a crash: call the model again from here
        return entries

    def _save(self, entry: dict[str, Any]) -> None:
        if self.journal_path is None:
            return
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        with self.journal_path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")

    # -- the loop -------------------------------------------------------------
    def run(self) -> StepResult:
        ctx = self.ctx
        prompt = ctx.instruction
        if ctx.feedback:
            prompt += "\n\nThe check failed after your last attempt. Its output (tail):\n" + ctx.feedback
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        for n in range(1, MAX_TURNS + 1):
            if ctx.cancel is not None and ctx.cancel.is_set():
                return self._stopped(StepErrorKind.CANCELLED, "cancelled")
            stop = self._budget_stop()
            if stop is not None:
                kind = StepErrorKind.TIMEOUT if stop.kind is StopKind.WALL_TIME else StepErrorKind.BUDGET
                return self._stopped(kind, stop.reason, stop.kind)
            try:
                message = self._complete(messages, n)
            except _ModelError as exc:
                self.result.exit_code = 1
                self.result.error, self.result.error_kind = str(exc), exc.kind
                return self.result
            messages.append(message)
            self.result.transcript.append(message)
            calls = message.get("tool_calls") or []
            if not calls:
                self.result.summary = (message.get("content") or "").strip()[:2000]
                return self.result
            for call in calls:
                output = self._tool(call)
                tool_msg = {"role": "tool", "tool_call_id": call["id"], "content": output}
                messages.append(tool_msg)
                self.result.transcript.append(tool_msg)
        self.result.summary = f"stopped after {MAX_TURNS} model turns"
        return self.result

    def _budget_stop(self) -> Stop | None:
        """The budget this step has spent (of what was left of each when it began), else None."""
        ctx = self.ctx
        minutes = None if ctx.timeout_s is None else ctx.timeout_s / 60
        return exceeded(Budgets(None, ctx.max_usd, ctx.max_tokens, minutes),
                        Spent(0, self.spent_usd, self.spent_tokens, time.monotonic() - self.started), "step")

    def _stopped(self, kind: StepErrorKind, reason: str, limit: StopKind | None = None) -> StepResult:
        """End the step at a limit (`limit`, the kind of budget) or a cancel."""
        self.result.error_kind, self.result.stopped_by, self.result.stop_kind = kind, reason, limit
        self.result.error = f"stopped: {reason}"
        self.result.exit_code = 124 if limit is StopKind.WALL_TIME else 1
        return self.result

    # -- one model call --------------------------------------------------------
    def _complete(self, messages: list[dict[str, Any]], n: int) -> dict[str, Any]:
        if n <= len(self.journal):
            # Paid for before the step was re-run and stored then, so the budgets the step was given
            # are what was left after it: it does not count against them again. It is handed to
            # on_usage again (storing is by key) in case a crash came before it was stored.
            entry = self.journal[n - 1]
            row = UsageRow(**{**entry["usage"], "ts": _parse_ts(entry["usage"]["ts"])})
            self.result.usage.append(row)
            if self.ctx.on_usage is not None:
                self.ctx.on_usage(row)
            return dict(entry["message"])
        span_cm = self.tracer.start_as_current_span(f"chat {self.model}") if self.tracer else None
        span = span_cm.__enter__() if span_cm else None
        try:
            message, row = self._call_model(messages, n)
            if span is not None:
                from loopmeter.telemetry.otel import usage_attributes

                span.set_attributes(usage_attributes(row))
        except BaseException as exc:
            if span_cm is not None:
                span_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if span_cm is not None:
            span_cm.__exit__(None, None, None)
        self._save({"message": message, "usage": {**row.as_dict(), "ts": row.ts.isoformat()}})
        self._account(row)
        if self.ctx.on_usage is not None:
            self.ctx.on_usage(row)
        return message

    def _account(self, row: UsageRow) -> None:
        self.result.usage.append(row)
        self.spent_usd += row.cost_usd or 0.0
        self.spent_tokens += row.total_tokens

    def _call_model(self, messages: list[dict[str, Any]], n: int) -> tuple[dict[str, Any], UsageRow]:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        ctx = self.ctx
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "tools": SCHEMAS}
        api_base = ctx.api_base or (os.environ.get("OPENAI_BASE_URL") if self.provider in (None, "openai") else None)
        if api_base:
            kwargs["api_base"] = api_base
        key = self._api_key()
        if key:
            kwargs["api_key"] = key
        elif api_base:
            kwargs["api_key"] = "sk-none"  # local OpenAI-compatible servers accept any key
        if self.deadline is not None:
            kwargs["timeout"] = max(self.deadline - time.monotonic(), 1.0)
        from loopmeter.telemetry.otel import get_telemetry

        telemetry = self.telemetry or get_telemetry()
        started = time.monotonic()
        try:
            resp = litellm.completion(**kwargs)
        except Exception as exc:  # litellm maps provider errors to its own types
            telemetry.record_failed_call(provider=self.provider or "openai", model=self.model,
                                         duration_s=time.monotonic() - started, error_type=type(exc).__name__)
            raise _ModelError(f"model call failed: {type(exc).__name__}: {str(exc)[:300]}",
                              _step_error_kind(exc)) from exc
        latency_ms = (time.monotonic() - started) * 1000
        row = self._usage_row(resp, n, latency_ms)
        telemetry.record_usage(row)
        msg = resp.choices[0].message
        message: dict[str, Any] = {"role": "assistant", "content": msg.content}
        if getattr(msg, "tool_calls", None):
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"}}
                for c in msg.tool_calls
            ]
        return message, row

    def _api_key(self) -> str | None:
        from loopmeter.secrets import PROVIDERS, get_key

        provider = self.provider or "openai"
        if provider not in PROVIDERS:
            return None
        key, _ = get_key(provider)
        return key

    def _usage_row(self, resp: Any, n: int, latency_ms: float) -> UsageRow:
        from loopmeter.telemetry import tokens
        from loopmeter.telemetry.costs import price_row
        from loopmeter.telemetry.pricing import default_price_table

        ctx = self.ctx
        counts = tokens.or_unknown(tokens.litellm_usage, getattr(resp, "usage", None))
        return price_row(UsageRow(
            key=f"loop:{ctx.attempt_id}:{ctx.iteration}:{n}", source="loop", ts=utcnow(),
            model=self.model, agent="builtin", provider=self.provider or "openai", session_id=ctx.attempt_id,
            project=ctx.project, user=ctx.user, **counts._asdict(),
            latency_ms=round(latency_ms, 2), request_id=getattr(resp, "id", None), run_id=ctx.run_id,
            attempt_id=ctx.attempt_id,
        ), default_price_table())

    # -- tools ------------------------------------------------------------------
    def _tool(self, call: dict[str, Any]) -> str:
        name = call["function"]["name"]
        try:
            args = json.loads(call["function"].get("arguments") or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments are not an object")
        except ValueError as exc:
            return f"error: arguments are not valid JSON: {exc}"
        if self.tracer is None:
            return self.toolbox.call(name, args)
        with self.tracer.start_as_current_span(f"execute_tool {name}") as span:
            span.set_attribute("gen_ai.tool.name", name)
            span.set_attribute("gen_ai.operation.name", "execute_tool")
            return self.toolbox.call(name, args)

    def _path_rule(self, action: str, rel_path: str) -> str | None:
        """The policy's explicit read/write rules for a worktree path (the sandbox mounts do the rest)."""
        ctx = self.ctx
        if ctx.policy is None:
            return None
        decision = ctx.policy.decide(action, rel_path, ctx.actor or "agent:builtin")
        if not str(getattr(decision, "rule_id", "")).startswith("rules."):
            return None  # only explicit rules: the worktree itself is always the agent's to edit
        if decision.decision == "deny":
            return f"refused by policy ({decision.rule_id}): {action} {rel_path}"
        if decision.decision == "ask" and (ctx.approve is None or not ctx.approve(action, rel_path)):
            return f"refused: a person did not approve {action} {rel_path}"
        return None

    def _run_command(self, command: str) -> str:
        ctx = self.ctx
        actor = ctx.actor or "agent:builtin"
        approved = False
        if ctx.policy is not None:
            decision = ctx.policy.decide("exec", command, actor)
            verdict = getattr(decision, "decision", "allow")
            if verdict == "deny":
                return f"denied by policy ({getattr(decision, 'rule_id', None)}): {command}"
            if verdict == "ask":
                if ctx.approve is None or not ctx.approve("exec", command):
                    return f"denied: a person did not approve `{command}`"
                approved = True
        if ctx.sandbox is None:
            return "error: no sandbox to run commands in"
        remaining = None if self.deadline is None else max(self.deadline - time.monotonic(), 0.1)
        res = ctx.sandbox.run(
            shell_argv(command), workdir=ctx.workdir, policy=ctx.policy, role="agent", actor=actor,
            timeout_s=remaining, run_id=ctx.run_id, attempt_id=ctx.attempt_id, cancel=ctx.cancel,
            env={"PYTHONDONTWRITEBYTECODE": "1", **ctx.env}, approved=approved,
        )
        tail = clip((res.stdout or "") + (("\n[stderr]\n" + res.stderr) if res.stderr else ""))
        killed = f" (killed: {res.killed_reason})" if res.killed_reason else ""
        return f"exit code {res.exit_code}{killed}\n{tail}"


def _step_error_kind(exc: Exception) -> StepErrorKind:
    """A refused key or a timeout ends the step so; any other failed model call is the agent's,
    which the next iteration tries again."""
    kind = model_error_kind(exc)
    if kind is ErrorKind.AUTH:
        return StepErrorKind.AUTH
    if kind is ErrorKind.TIMEOUT:
        return StepErrorKind.TIMEOUT
    return StepErrorKind.AGENT


class _ModelError(Exception):
    def __init__(self, message: str, kind: StepErrorKind):
        super().__init__(message)
        self.kind = kind


def _parse_ts(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)
