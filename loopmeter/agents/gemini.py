"""`gemini`: Google's Gemini CLI, headless, inside the sandbox.

    gemini -p PROMPT --output-format json --approval-mode yolo --skip-trust [-m MODEL]

It prints one (pretty-printed) JSON object: `session_id`, `response`, and `stats`
with per-model `api` (requests, errors, latency) and `tokens` (`prompt` including
`cached`, `candidates`, `thoughts`, `tool`). Errors go to stderr as
`{"error": {"type", "message", "code"}}` with the exit code (41 auth, 42 bad input,
53 turn limit, 130 cancelled); an error object carries no stats, so no usage row.

One row per model: input = prompt - cached + tool-use prompt tokens, cache reads =
cached, output = candidates + thoughts (reasoning = thoughts). No dollars: priced
from the table when the model is known, otherwise unpriced.

`--api-base` sets GOOGLE_GEMINI_BASE_URL (a Gemini API server); API-key auth is pinned
in the private HOME's settings so that variable does not switch the auth type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loopmeter.agents import _cli
from loopmeter.agents.base import StepContext, StepResult
from loopmeter.telemetry import tokens
from loopmeter.telemetry.costs import price_row
from loopmeter.telemetry.pricing import default_price_table
from loopmeter.vocab import StepErrorKind

SOURCE = "gemini-json"
BINARY = "gemini"
INSTALL_HINT = "install Gemini CLI: npm install -g @google/gemini-cli"
KEY_VAR = "GEMINI_API_KEY"
# gemini's exit code -> (error_kind, stopped_by)
EXIT_ERRORS: dict[int, tuple[StepErrorKind, str | None]] = {
    41: (StepErrorKind.AUTH, None), 42: (StepErrorKind.AGENT, None),
    53: (StepErrorKind.BUDGET, "max_turns"), 130: (StepErrorKind.BUDGET, "cancelled"),
}


class GeminiBackend:
    name = "gemini"
    description = "Google Gemini CLI (gemini -p, json), sandboxed"

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        return _cli.check_available(BINARY, INSTALL_HINT, KEY_VAR, "gemini", api_base)

    def argv(self, ctx: StepContext, exe: str) -> list[str]:
        argv = [exe, "-p", _cli.prompt_for(ctx), "--output-format", "json", "--approval-mode", "yolo", "--skip-trust"]
        if ctx.model:
            argv += ["-m", ctx.model]
        return argv

    def step(self, ctx: StepContext) -> StepResult:
        exe = _cli.resolve_executable(BINARY, ctx.env)
        if exe is None:
            return _cli.not_installed(BINARY, INSTALL_HINT)
        key, is_secret = _cli.key_for(ctx, KEY_VAR)
        if key is None:
            return _cli.no_key(self.name, KEY_VAR, "gemini")
        env = {"NO_COLOR": "1", "GEMINI_CLI_NO_RELAUNCH": "true"}
        if ctx.api_base:
            env["GOOGLE_GEMINI_BASE_URL"] = ctx.api_base.rstrip("/")
        secrets: dict[str, str] = {}
        _cli.place_key(KEY_VAR, key, is_secret, env, secrets)
        home = _cli.agent_home(ctx)
        pin_api_key_auth(home)
        res = _cli.run_cli(ctx, self.argv(ctx, exe), env=env, secrets=secrets, home=home, stdin="")
        doc = _cli.json_document(res.stdout)
        err_doc = _cli.json_document(res.stderr)
        out = parse_output(doc, err_doc, ctx)
        out.exit_code = res.exit_code
        kind, stopped = _cli.exec_failure(res)
        if kind:
            out.error_kind, out.stopped_by = kind, stopped
            out.error = out.error or f"gemini stopped: {res.killed_reason or 'timeout'}"
        elif res.exit_code != 0:
            unlisted = (out.error_kind or StepErrorKind.AGENT, None)
            out.error_kind, out.stopped_by = EXIT_ERRORS.get(res.exit_code, unlisted)
            out.error = out.error or _cli.tail(res.stderr or res.stdout, 500) or f"gemini exited {res.exit_code}"
        return _cli.finish(ctx, out)


def pin_api_key_auth(home: Path) -> None:
    """Select API-key auth in the private HOME's settings.

    Gemini CLI otherwise infers a "gateway" auth type from GOOGLE_GEMINI_BASE_URL and
    rejects it ("Invalid auth method selected", exit 41); pinned, the key is used and the
    base URL still applies (verified with 0.61.0)."""
    try:  # HOME is written by sandboxed code: read and written without following a link
        settings = json.loads(_cli.home_read(home, ".gemini/settings.json") or "{}")
    except json.JSONDecodeError:
        settings = {}
    if not isinstance(settings, dict):
        settings = {}
    security = settings.setdefault("security", {})
    auth = security.setdefault("auth", {}) if isinstance(security, dict) else None
    if not isinstance(auth, dict):
        settings["security"] = {"auth": {}}
        auth = settings["security"]["auth"]
    auth["selectedType"] = "gemini-api-key"
    _cli.home_write(home, ".gemini/settings.json", json.dumps(settings, indent=2))


def parse_output(doc: dict[str, Any] | None, err_doc: dict[str, Any] | None, ctx: StepContext) -> StepResult:
    out = StepResult()
    for d in (doc, err_doc):
        if d:
            out.transcript.append(_cli.clip({k: v for k, v in d.items() if k != "stats"}))
    doc = doc or {}
    out.session_id = doc.get("session_id") or (err_doc or {}).get("session_id")
    out.summary = str(doc.get("response") or "")[:2000]
    error = doc.get("error") or (err_doc or {}).get("error")
    if isinstance(error, dict):
        out.error = str(error.get("message") or error.get("type") or "gemini error")
        auth = error.get("code") == 41 or "auth" in str(error.get("type", "")).lower()
        out.error_kind = StepErrorKind.AUTH if auth else StepErrorKind.AGENT
    stats = doc.get("stats") or {}
    n = 0
    for model, m in (stats.get("models") or {}).items():
        raw = m.get("tokens") or {}
        api = m.get("api") or {}
        if not raw and not api.get("totalRequests"):
            continue
        n += 1
        get = raw.get
        counts = tokens.or_unknown(tokens.gemini, _cli.count(get("prompt")), _cli.count(get("cached")),
                                   _cli.count(get("candidates")), _cli.count(get("thoughts")), _cli.count(get("tool")))
        latency = api.get("totalLatencyMs")
        r = _cli.row(ctx, _cli.loop_key(ctx, n), SOURCE, model=model, provider="gemini", session_id=out.session_id,
                     latency_ms=float(latency) if isinstance(latency, int | float) else None, **counts._asdict())
        out.usage.append(price_row(r, default_price_table()))
    if not out.usage and "response" in doc:
        out.usage.append(_cli.unreported_row(ctx, SOURCE, provider="gemini", session_id=out.session_id))
    if stats:
        out.transcript.append({"type": "stats", "tools": _cli.clip(stats.get("tools")), "files": stats.get("files")})
    return out


def backend() -> GeminiBackend:
    return GeminiBackend()
