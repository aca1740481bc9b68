"""`codex`: OpenAI's Codex CLI, headless, inside loopmeter's sandbox.

    codex exec --json --skip-git-repo-check --sandbox danger-full-access [-m MODEL] PROMPT

Codex's own sandbox cannot start inside bubblewrap, so it runs unsandboxed inside
ours (`danger-full-access`), with stdin closed. Its provider comes from a private
CODEX_HOME/config.toml: the OpenAI API by default, or `--api-base` (Codex speaks only
the Responses API, `wire_api = "responses"`).

Usage: one row per `turn.completed` event. Codex's `input_tokens` include the cached
ones: the row stores the non-cached part as input and `cached_input_tokens` as cache
reads; `output_tokens` include `reasoning_output_tokens`. Codex reports no dollars:
rows are priced from the price table when the model is known, otherwise unpriced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loopmeter.agents import _cli
from loopmeter.agents.base import StepContext, StepResult
from loopmeter.records import UsageRow
from loopmeter.telemetry import tokens
from loopmeter.telemetry.costs import price_row
from loopmeter.telemetry.pricing import default_price_table
from loopmeter.vocab import StepErrorKind

SOURCE = "codex-json"
BINARY = "codex"
INSTALL_HINT = "install Codex: npm install -g @openai/codex"
KEY_VAR = "OPENAI_API_KEY"
OPENAI_BASE = "https://api.openai.com/v1"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def provider_base_url(api_base: str | None) -> str:
    if not api_base:
        return OPENAI_BASE
    base = api_base.rstrip("/")
    return base if urlsplit(base).path not in ("", "/") else base + "/v1"


def config_toml(model: str | None, api_base: str | None) -> str:
    """CODEX_HOME/config.toml: a provider reading its key from OPENAI_API_KEY, Responses API."""
    name = "local" if api_base else "openai-key"
    lines = []
    if model:
        lines.append(f"model = {_toml_str(model)}")
    lines += [
        f"model_provider = {_toml_str(name)}",
        # no update checks or analytics from inside a sandbox (the proxy would refuse them anyway)
        "check_for_update_on_startup = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
        f"[model_providers.{name}]",
        f"name = {_toml_str(name)}",
        f"base_url = {_toml_str(provider_base_url(api_base))}",
        f"env_key = {_toml_str(KEY_VAR)}",
        'wire_api = "responses"',
        "",
    ]
    return "\n".join(lines)


class CodexBackend:
    name = "codex"
    description = "OpenAI Codex CLI (codex exec --json), sandboxed"

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        return _cli.check_available(BINARY, INSTALL_HINT, KEY_VAR, "openai", api_base)

    def argv(self, ctx: StepContext, exe: str) -> list[str]:
        argv = [exe, "exec", "--json", "--skip-git-repo-check", "--sandbox", "danger-full-access", "--color", "never"]
        if ctx.model:
            argv += ["-m", ctx.model]
        return [*argv, _cli.prompt_for(ctx)]

    def step(self, ctx: StepContext) -> StepResult:
        exe = _cli.resolve_executable(BINARY, ctx.env)
        if exe is None:
            return _cli.not_installed(BINARY, INSTALL_HINT)
        key, is_secret = _cli.key_for(ctx, KEY_VAR)
        if key is None:
            return _cli.no_key(self.name, KEY_VAR, "openai")
        home = _cli.agent_home(ctx)
        codex_home = home / ".codex"
        _cli.home_write(home, ".codex/config.toml", config_toml(ctx.model, ctx.api_base))
        env = {"CODEX_HOME": str(codex_home), "NO_COLOR": "1"}
        secrets: dict[str, str] = {}
        _cli.place_key(KEY_VAR, key, is_secret, env, secrets)
        res = _cli.run_cli(ctx, self.argv(ctx, exe), env=env, secrets=secrets, home=home, stdin="",
                           watch=_watch_auth_retries)
        events, bad_lines = _cli.json_lines(res.stdout)
        model = ctx.model or _rollout_model(codex_home, events)
        out = parse_events(events, ctx, model)
        out.exit_code = res.exit_code
        kind, stopped = _cli.exec_failure(res)
        if kind in (StepErrorKind.AUTH, StepErrorKind.INFRA):
            out.error_kind = kind
            out.error = out.error or (
                "the model server rejected the API key (HTTP 401/403); codex was stopped"
                if kind is StepErrorKind.AUTH else "the sandbox's egress proxy refused the model API")
        elif kind:
            out.error_kind, out.stopped_by = kind, stopped
            out.error = out.error or f"codex stopped: {res.killed_reason or 'timeout'}"
        elif res.exit_code != 0 and not out.error:
            out.error = f"codex exited {res.exit_code}: {_cli.tail(res.stderr or res.stdout, 500)}"
            out.error_kind = StepErrorKind.AGENT
        return _cli.finish(ctx, out, bad_lines)


def _watch_auth_retries(stream: str, line: str) -> str | None:
    """Codex reconnects after a rejected key or a refused connection ("Reconnecting... 1/5
    (unexpected status 401"); neither will change, so stop at once."""
    if stream != "stdout" or '"type":"error"' not in line.replace(" ", ""):
        return None
    if _cli.PROXY_DENIAL in line:
        return "network"
    if "status 401" in line or "status 403" in line:
        return "auth"
    return None


def _rollout_model(codex_home: Path, events: list[dict[str, Any]]) -> str | None:
    """The model Codex used, from the latest turn_context of this thread's rollout log."""
    thread = next((e.get("thread_id") for e in events if e.get("type") == "thread.started"), None)
    if not thread:
        return None
    model = None
    # CODEX_HOME is written by sandboxed code: no link in it is followed
    for _, text in _cli.home_files(codex_home, "sessions",
                                   lambda name: name.startswith("rollout-") and thread in name):
        for line in text.splitlines():
            if '"turn_context"' not in line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            model = (obj.get("payload") or {}).get("model") or model
    return model


def usage_row(ctx: StepContext, n: int, usage: dict[str, Any], model: str | None, session: str | None) -> UsageRow:
    get = usage.get
    counts = tokens.or_unknown(tokens.openai, _cli.count(get("input_tokens")), _cli.count(get("cached_input_tokens")),
                               _cli.count(get("output_tokens")), _cli.count(get("reasoning_output_tokens")),
                               _cli.count(get("cache_write_input_tokens")))
    r = _cli.row(ctx, _cli.loop_key(ctx, n), SOURCE, model=model, provider="openai", session_id=session,
                 **counts._asdict())
    return price_row(r, default_price_table())


def parse_events(events: list[dict[str, Any]], ctx: StepContext, model: str | None) -> StepResult:
    out = StepResult()
    out.session_id = next((e.get("thread_id") for e in events if e.get("type") == "thread.started"), None)
    out.transcript = [_cli.clip(e) for e in events]
    messages: list[str] = []
    errors: list[str] = []
    n = 0
    for e in events:
        kind = e.get("type")
        if kind == "turn.completed":
            n += 1
            out.usage.append(usage_row(ctx, n, e.get("usage") or {}, model, out.session_id))
        elif kind == "error":
            errors.append(str(e.get("message") or "error"))
        elif kind == "item.completed":
            item = e.get("item") or {}
            if item.get("type") == "agent_message" and item.get("text"):
                messages.append(str(item["text"]))
    out.summary = (messages[-1] if messages else "")[:2000]
    failures = [str((e.get("error") or {}).get("message") or "turn failed")
                for e in events if e.get("type") == "turn.failed"]
    if failures or (errors and not out.usage):
        # "Reconnecting... n/5" error events are retries; the turn's own failure says why.
        out.error = (failures or errors)[-1][:1000]
        out.error_kind = _cli.error_kind_for(out.error, 401 if "401" in out.error else None)
    return out


def backend() -> CodexBackend:
    return CodexBackend()
