"""`claude-code`: Anthropic's Claude Code CLI, headless, inside the sandbox.

    claude -p PROMPT --output-format stream-json --verbose --permission-mode acceptEdits
           --allowedTools Bash,Edit,Write,... [--disallowedTools Bash(git push:*)]
           [--model M] [--max-budget-usd X] [--resume SESSION]

Usage rows: one per API request, from the session transcript Claude Code writes under
its (private) HOME, keyed `anthropic-req:<request id>` like the log and OTLP sources so
nothing counts twice. The final result's `modelUsage` is the agent's own total per
model; requests it made that the transcript does not show (a title, a quota probe)
become one `loop:` row per model for the difference, so the stored tokens add up to
what the agent reported. Claude Code reports dollars per model, not per request: each
model's `costUSD` is spread over its rows in proportion to their list-price cost
(`cost_source = reported`; the sum is exactly the agent's `total_cost_usd`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from loopmeter.agents import _cli
from loopmeter.agents.base import StepContext, StepResult
from loopmeter.records import UsageRow, total_tokens, utcnow
from loopmeter.telemetry import tokens
from loopmeter.telemetry.costs import price_row
from loopmeter.telemetry.pricing import default_price_table
from loopmeter.vocab import CostSource, StepErrorKind, StopKind

SOURCE = "claude-json"
BINARY = "claude"
INSTALL_HINT = "install Claude Code: npm install -g @anthropic-ai/claude-code"
KEY_VAR = "ANTHROPIC_API_KEY"
ALLOWED_TOOLS = "Bash,Edit,MultiEdit,Write,Read,Glob,Grep,LS,NotebookEdit,TodoWrite"
SESSION_FILE = ".loopmeter-claude-session"
COUNTED_FILE = ".loopmeter-claude-counted"  # request keys already reported by earlier iterations
_TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
_MODEL_USAGE_FIELDS = {
    "input_tokens": "inputTokens",
    "cache_read_tokens": "cacheReadInputTokens",
    "cache_write_tokens": "cacheCreationInputTokens",
    "output_tokens": "outputTokens",
}


def _base_model(name: str | None) -> str | None:
    # modelUsage keys may carry a context tag ("claude-opus-4-8[1m]") the API's model name lacks.
    return re.sub(r"\[[^\]]*\]$", "", name) if name else name


class ClaudeCodeBackend:
    name = "claude-code"
    description = "Anthropic Claude Code CLI (claude -p, stream-json), sandboxed"

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        return _cli.check_available(BINARY, INSTALL_HINT, KEY_VAR, "anthropic", api_base)

    # -- invocation ------------------------------------------------------------
    def argv(self, ctx: StepContext, exe: str, resume: str | None) -> list[str]:
        argv = [exe, "-p", _cli.prompt_for(ctx), "--output-format", "stream-json", "--verbose",
                "--permission-mode", "acceptEdits", "--allowedTools", ALLOWED_TOOLS]
        denied = _denied_bash_rules(ctx)
        if denied:
            argv += ["--disallowedTools", ",".join(denied)]
        if ctx.model:
            argv += ["--model", ctx.model]
        if ctx.max_usd is not None and ctx.max_usd > 0:
            argv += ["--max-budget-usd", f"{ctx.max_usd:.6f}"]
        if resume:
            argv += ["--resume", resume]
        return argv

    def step(self, ctx: StepContext) -> StepResult:
        exe = _cli.resolve_executable(BINARY, ctx.env)
        if exe is None:
            return _cli.not_installed(BINARY, INSTALL_HINT)
        key, is_secret = _cli.key_for(ctx, KEY_VAR)
        if key is None:
            return _cli.no_key(self.name, KEY_VAR, "anthropic")
        home = _cli.agent_home(ctx)
        env = {"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
               "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"}
        if ctx.api_base:
            env["ANTHROPIC_BASE_URL"] = ctx.api_base.rstrip("/")
        secrets: dict[str, str] = {}
        _cli.place_key(KEY_VAR, key, is_secret, env, secrets)
        resume = _previous_session(home) if ctx.iteration > 1 else None
        started = utcnow()
        res = _cli.run_cli(ctx, self.argv(ctx, exe, resume), env=env, secrets=secrets, home=home,
                           watch=StreamWatch(ctx.max_tokens))
        events, bad_lines = _cli.json_lines(res.stdout)
        out = parse_stream(events, ctx, transcript_rows=_transcript_rows(home, events, started, ctx))
        out.exit_code = res.exit_code
        if out.session_id:
            _cli.home_write(home, SESSION_FILE, out.session_id)
        kind, stopped = _cli.exec_failure(res)
        if kind is StepErrorKind.AUTH:
            out.error_kind = kind
            out.error = "the model server rejected the API key (HTTP 401/403); claude was stopped instead of retrying"
        elif kind is StepErrorKind.INFRA:
            out.error_kind = kind
            out.error = "the sandbox's egress proxy refused or could not reach the model API; claude was stopped"
        elif kind:
            out.error_kind, out.stopped_by = kind, stopped
            out.error = f"claude was stopped: {stopped or res.killed_reason}"
        elif res.exit_code != 0 and not out.error:
            out.error = f"claude exited {res.exit_code}: {_cli.tail(res.stderr or res.stdout, 500)}"
            out.error_kind = out.error_kind or StepErrorKind.AGENT
        return _cli.finish(ctx, out, bad_lines)


class StreamWatch:
    """Reads the live stream: stops Claude Code at the first 401/403 retry (it would retry a
    rejected key for minutes) and once the tokens seen pass the step's token budget."""

    def __init__(self, max_tokens: int | None):
        self.max_tokens = max_tokens
        self.tokens: dict[str, int] = {}  # message id -> tokens known so far

    def __call__(self, stream: str, line: str) -> str | None:
        if stream != "stdout" or not ('"api_retry"' in line or '"assistant"' in line):
            return None
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(event, dict):
            return None
        if event.get("type") == "system" and event.get("subtype") == "api_retry":
            if _cli.PROXY_DENIAL in line:
                return "network"
            return "auth" if event.get("error_status") in (401, 403) else None
        if event.get("type") != "assistant" or self.max_tokens is None:
            return None
        message = event.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
            return None
        c = _counts(message["usage"])
        self.tokens[str(message.get("id"))] = total_tokens(c.input_tokens, c.cache_read_tokens, c.cache_write_tokens,
                                                           c.output_tokens)
        return "max_tokens" if sum(self.tokens.values()) > self.max_tokens else None


def _denied_bash_rules(ctx: StepContext) -> list[str]:
    """Policy exec rules that deny (or ask: nobody can answer headless) as Claude Code Bash rules."""
    model = getattr(ctx.policy, "model", None)
    out: list[str] = []
    for rule in getattr(model, "rules", []) or []:
        if rule.action != "exec" or rule.decision not in ("deny", "ask"):
            continue
        if not any(a in ("*", "agent:*", f"agent:{ctx.agent}") for a in rule.actors):
            continue
        prefix = rule.match.rstrip("*").strip()
        if prefix and not any(c in prefix for c in "*?["):
            out.append(f"Bash({prefix}:*)")
    return out


def _previous_session(home: Path) -> str | None:
    session = (_cli.home_read(home, SESSION_FILE) or "").strip()
    if not session:
        return None
    found = _cli.home_files(home, ".claude/projects", lambda name: name == f"{session}.jsonl")
    return session if found else None


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _transcript_rows(home: Path, events: list[dict[str, Any]], started: datetime,
                     ctx: StepContext) -> list[UsageRow]:
    """One row per API request of this step, from the transcript under the agent's HOME."""
    session = next((e.get("session_id") for e in events if e.get("session_id")), None)
    if not session:
        return []
    seen: set[tuple[str, str]] = set()
    rows: list[UsageRow] = []
    counted_text = _cli.home_read(home, COUNTED_FILE) or ""
    counted = set(counted_text.split())
    # the agent's HOME is written by sandboxed code: no link in it is followed
    for _, text in _cli.home_files(home, ".claude/projects", lambda name: name.endswith(".jsonl")):
        for line in text.splitlines():
            if '"usage"' not in line or '"assistant"' not in line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line
            if obj.get("type") != "assistant" or obj.get("sessionId") != session:
                continue
            ts = _parse_ts(obj.get("timestamp"))
            if ts is not None and ts < started:
                continue  # an earlier iteration of a resumed session
            r = _message_row(obj.get("message") or {}, obj.get("requestId"), session, ts, ctx, seen)
            if r is not None and r.key not in counted:
                rows.append(r)
    if rows:
        _cli.home_write(home, COUNTED_FILE, counted_text + "".join(f"{r.key}\n" for r in rows))
    return rows


def _message_row(message: Any, request_id: str | None, session: str | None, ts: datetime | None,
                 ctx: StepContext, seen: set[tuple[str, str]]) -> UsageRow | None:
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    msg_id = message.get("id") or ""
    model = message.get("model")
    if not isinstance(usage, dict) or not usage or model == "<synthetic>":
        return None
    ident = (msg_id, request_id or "")
    if ident in seen:
        return None
    seen.add(ident)
    key = f"anthropic-req:{request_id}" if request_id else f"claude-msg:{msg_id}"
    return _cli.row(ctx, key, SOURCE, ts=ts or utcnow(), model=model, provider="anthropic", session_id=session,
                    request_id=request_id, **_counts(usage)._asdict())


def _counts(usage: dict[str, Any]) -> tokens.Counts:
    """A Messages API `usage` object from Claude Code's output (written in the sandbox: every count
    read through `_cli.count`) in the store's terms."""
    get, count = usage.get, _cli.count
    cache = get("cache_creation")
    one_hour = count(cache.get("ephemeral_1h_input_tokens")) if isinstance(cache, dict) else None
    return tokens.anthropic(count(get("input_tokens")), count(get("cache_read_input_tokens")),
                            count(get("cache_creation_input_tokens")), count(get("output_tokens")), one_hour)


def parse_stream(events: list[dict[str, Any]], ctx: StepContext,
                 transcript_rows: list[UsageRow] | None = None) -> StepResult:
    """StepResult from Claude Code's stream-json events (or the single json result)."""
    out = StepResult()
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    init = next((e for e in events if e.get("type") == "system" and e.get("subtype") == "init"), None)
    out.session_id = (result or {}).get("session_id") or (init or {}).get("session_id")
    out.transcript = [_cli.clip(e) for e in events if not (e.get("type") == "system" and e.get("subtype") == "init")]
    if init:
        out.transcript.insert(0, {"type": "system", "subtype": "init", "model": init.get("model"),
                                  "cwd": init.get("cwd"), "session_id": init.get("session_id"),
                                  "claude_code_version": init.get("claude_code_version")})
    rows = list(transcript_rows or [])
    if not rows:
        rows = _stream_rows(events, out.session_id, ctx)
    if result is None:
        out.usage = [price_row(r, default_price_table()) for r in rows]
        out.error = "claude ended without a result"
        out.error_kind = StepErrorKind.AGENT
        return out
    out.summary = str(result.get("result") or "")[:2000]
    out.cost_usd = result.get("total_cost_usd")
    out.usage = _reconcile(rows, result, ctx, out.session_id)
    subtype = str(result.get("subtype") or "")
    if result.get("is_error") or subtype not in ("", "success"):
        out.error = out.summary or subtype or "claude reported an error"
        kind = _cli.error_kind_for(out.summary, result.get("api_error_status"))
        if kind is not StepErrorKind.AGENT:
            out.error_kind = kind
        elif "budget" in subtype:  # its result's subtype: error_max_budget_usd
            out.error_kind, out.stopped_by, out.stop_kind = StepErrorKind.BUDGET, "max_usd", StopKind.USD
            out.error = f"claude stopped at its --max-budget-usd limit ({subtype})"
        else:
            out.error_kind = StepErrorKind.AGENT
    return out


def _stream_rows(events: list[dict[str, Any]], session: str | None, ctx: StepContext) -> list[UsageRow]:
    """Per-request rows from stream events when no transcript is readable.

    Stream events carry the usage known when a content block ended: input and cache
    counts are final, output is not; `_reconcile` moves the rest into the per-model row."""
    seen: set[tuple[str, str]] = set()
    rows = []
    for e in events:
        if e.get("type") != "assistant":
            continue
        r = _message_row(e.get("message") or {}, e.get("request_id"), session, None, ctx, seen)
        if r is not None:
            rows.append(r)
    return rows


def _reconcile(rows: list[UsageRow], result: dict[str, Any], ctx: StepContext,
               session: str | None) -> list[UsageRow]:
    model_usage: dict[str, Any] = result.get("modelUsage") or {}
    if not model_usage:
        raw = result.get("usage")
        u: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if not rows and any(u.get(k) for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                                "cache_creation_input_tokens")):
            rows = [_cli.row(ctx, _cli.loop_key(ctx, 1), SOURCE, session_id=session, provider="anthropic",
                             **_counts(u)._asdict())]
            if result.get("total_cost_usd") is not None:
                rows[0].cost_usd, rows[0].cost_source = float(result["total_cost_usd"]), CostSource.REPORTED
                return rows
        return [price_row(r, default_price_table()) for r in rows]
    out: list[UsageRow] = []
    n = 0
    by_model: dict[str, list[UsageRow]] = {}
    for r in rows:
        by_model.setdefault(_base_model(r.model) or "", []).append(r)
    for name, totals in model_usage.items():
        model = _base_model(name) or name
        mine = by_model.pop(model, [])
        remainder = {f: max(int(totals.get(k) or 0) - sum(getattr(r, f) or 0 for r in mine), 0)
                     for f, k in _MODEL_USAGE_FIELDS.items()}
        if any(remainder.values()):
            n += 1
            # A request the transcript does not show, or output counted after it was written.
            mine.append(_cli.row(ctx, _cli.loop_key(ctx, n), SOURCE, session_id=session, model=model,
                                 provider="anthropic", **remainder))
        cost = totals.get("costUSD")
        if cost is None:
            out.extend(price_row(r, default_price_table()) for r in mine)
        else:
            _apportion(mine, float(cost))
            out.extend(mine)
    for leftover in by_model.values():  # a model the result did not list: price it ourselves
        out.extend(price_row(r, default_price_table()) for r in leftover)
    return out


def _apportion(rows: list[UsageRow], cost: float) -> None:
    priced = [(price_row(_copy(r), default_price_table()).cost_usd or 0.0) for r in rows]
    weights = priced if sum(priced) > 0 else [float(r.total_tokens) for r in rows]
    total = sum(weights)
    for r, w in zip(rows, weights, strict=True):
        r.cost_usd = cost * (w / total) if total > 0 else cost / len(rows)
        r.cost_source = CostSource.REPORTED


def _copy(r: UsageRow) -> UsageRow:
    return UsageRow(**r.as_dict())


def backend() -> ClaudeCodeBackend:
    return ClaudeCodeBackend()
