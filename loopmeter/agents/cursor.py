"""`cursor`: the Cursor Agent CLI, headless, inside the sandbox.

    cursor-agent -p --output-format json --force [--model M] PROMPT

On success it prints one JSON object (`type: result`, `duration_api_ms`, `result`,
`session_id`, optional `request_id`); on failure it exits non-zero with a message on
stderr and no JSON. It reports no tokens and no dollars, so a finished step stores one
row with NULL tokens and `cost_source = unpriced` (a `usage` object, if a later version
adds one, is read). Cursor has no custom model endpoint: `--api-base` does not apply.
"""

from __future__ import annotations

from typing import Any

from loopmeter.agents import _cli
from loopmeter.agents.base import StepContext, StepResult
from loopmeter.vocab import CostSource, StepErrorKind

SOURCE = "cursor-json"
BINARY = "cursor-agent"
INSTALL_HINT = "install the Cursor CLI: curl https://cursor.com/install -fsS | bash"
KEY_VAR = "CURSOR_API_KEY"


def _first(d: dict[str, Any], *names: str) -> int | None:
    for n in names:
        if isinstance(d.get(n), int):
            return int(d[n])
    return None


class CursorBackend:
    name = "cursor"
    description = "Cursor Agent CLI (cursor-agent -p, json); reports no tokens or dollars"

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        if _cli.resolve_executable(BINARY) is None:
            return False, INSTALL_HINT
        if not _cli.have_key(KEY_VAR, "cursor"):
            return False, f"no Cursor key: run `loopmeter auth set cursor` or set {KEY_VAR}"
        return True, None

    def argv(self, ctx: StepContext, exe: str) -> list[str]:
        argv = [exe, "-p", "--output-format", "json", "--force"]
        if ctx.model:
            argv += ["--model", ctx.model]
        return [*argv, _cli.prompt_for(ctx)]

    def step(self, ctx: StepContext) -> StepResult:
        exe = _cli.resolve_executable(BINARY, ctx.env)
        if exe is None:
            return _cli.not_installed(BINARY, INSTALL_HINT)
        key, _ = _cli.key_for(ctx, KEY_VAR, honor_api_base=False)
        if key is None:
            return StepResult(exit_code=2, error=f"no {KEY_VAR} for agent:cursor",
                              error_kind=StepErrorKind.AUTH,
                              summary=f"run `loopmeter auth set cursor` or set {KEY_VAR}")
        home = _cli.agent_home(ctx)
        res = _cli.run_cli(ctx, self.argv(ctx, exe), env={"NO_COLOR": "1"}, secrets={KEY_VAR: key}, home=home,
                           stdin="")
        out = parse_result(_cli.json_document(res.stdout), ctx)
        out.exit_code = res.exit_code
        kind, stopped = _cli.exec_failure(res)
        if kind:
            out.error_kind, out.stopped_by = kind, stopped
            out.error = out.error or f"cursor-agent stopped: {res.killed_reason or 'timeout'}"
        elif res.exit_code != 0 and not out.error:
            message = _cli.tail(res.stderr or res.stdout, 500) or f"cursor-agent exited {res.exit_code}"
            out.error = message
            low = message.lower()
            auth = "api key" in low or "auth" in low or "log in" in low
            out.error_kind = StepErrorKind.AUTH if auth else StepErrorKind.AGENT
        return _cli.finish(ctx, out)


def parse_result(doc: dict[str, Any] | None, ctx: StepContext) -> StepResult:
    out = StepResult()
    if doc is None or doc.get("type") != "result":
        return out
    out.transcript = [_cli.clip(doc)]
    out.session_id = doc.get("session_id")
    out.summary = str(doc.get("result") or "")[:2000]
    raw_usage = doc.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    latency = doc.get("duration_api_ms")
    r = _cli.row(
        ctx, _cli.loop_key(ctx, 1), SOURCE, model=ctx.model, provider="cursor", session_id=out.session_id,
        request_id=doc.get("request_id"), latency_ms=float(latency) if isinstance(latency, int | float) else None,
        input_tokens=_first(usage, "inputTokens", "input_tokens"),
        output_tokens=_first(usage, "outputTokens", "output_tokens"),
        cache_read_tokens=_first(usage, "cacheReadTokens", "cache_read_tokens"),
        cache_write_tokens=_first(usage, "cacheWriteTokens", "cache_write_tokens"),
        cost_source=CostSource.UNPRICED,
    )
    # Cursor bills by its own plan; list prices would be invented numbers.
    out.usage = [r]
    if doc.get("is_error") or doc.get("subtype") not in (None, "success"):
        out.error = out.summary or str(doc.get("subtype") or "cursor-agent reported an error")
        out.error_kind = StepErrorKind.AGENT
    return out


def backend() -> CursorBackend:
    return CursorBackend()
