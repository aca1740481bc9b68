"""`aider`: Aider, headless, inside the sandbox.

    aider --message PROMPT --yes-always --no-auto-commits --no-git --no-pretty --no-stream ...
          [--model M] [--openai-api-base API_BASE]      (flags checked against aider 0.86.2)

Aider prints text only. After each model call it prints one line:

    Tokens: 12k sent, 1.5k cache write, 3.2k cache hit, 1.1k received. Cost: $0.04 message, $0.09 session.

(the cache parts only when the provider reports them; the `Cost:` part only when
aider knows the model's price). Each such line becomes one row. Token counts are
**approximate**: aider rounds them (`1.1k` = 1,050-1,149; `12k` = 11,500-12,499) and
the row stores the parsed value (12k -> 12000). "sent" includes cache writes; for
Anthropic models it excludes cache hits, for others (OpenAI, DeepSeek) it includes
them, so input = sent - cache write (- cache hit when not Anthropic). A run with no
usage line stores one row with NULL tokens. The dollar figure per message is
aider's own (`cost_source = reported`); without it the row is priced from the
table if the model is known, else unpriced.

`--no-git`: inside the sandbox the repository's git directory is read-only, and
loopmeter (not the agent) owns commits; history files go to the agent's private HOME.
"""

from __future__ import annotations

import re

from loopmeter.agents import _cli
from loopmeter.agents.base import StepContext, StepResult
from loopmeter.records import UsageRow
from loopmeter.telemetry.costs import price_row
from loopmeter.telemetry.pricing import default_price_table
from loopmeter.vocab import StepErrorKind

SOURCE = "aider-text"
BINARY = "aider"
INSTALL_HINT = "install Aider: python -m pip install aider-install && aider-install"
KEY_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")

_TOKENS = r"(\d+(?:\.\d+)?)\s*([kKmM]?)"
TOKENS_LINE = re.compile(
    rf"Tokens:\s*{_TOKENS} sent"
    rf"(?:,\s*{_TOKENS} cache write)?"
    rf"(?:,\s*{_TOKENS} cache hit)?"
    rf",\s*{_TOKENS} received\."
    r"(?:\s*Cost:\s*\$(\d+(?:\.\d+)?) (?:message|request),\s*\$(\d+(?:\.\d+)?) session\.)?"
)
BANNER_MODEL = re.compile(r"^(?:Main model|Model):\s*(\S+)")
AUTH_ERRORS = ("AuthenticationError", "Invalid API key", "invalid x-api-key", "Incorrect API key")


def tokens(number: str | None, suffix: str | None) -> int | None:
    """'1.1', 'k' -> 1100 (aider's rounding is not undone: the value is approximate)."""
    if number is None:
        return None
    scale = {"k": 1_000, "m": 1_000_000}.get((suffix or "").lower(), 1)
    return int(round(float(number) * scale))


class AiderBackend:
    name = "aider"
    description = "Aider (aider --message, text output; rounded token counts)"

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        if _cli.resolve_executable(BINARY) is None:
            return False, INSTALL_HINT
        if not _cli.is_loopback_url(api_base) and not any(
                _cli.have_key(v, p) for v, p in zip(KEY_VARS, ("anthropic", "openai"), strict=True)):
            return False, ("no model key for aider: run `loopmeter auth set anthropic` (or openai), or set "
                           "ANTHROPIC_API_KEY / OPENAI_API_KEY (not needed with a local --api-base)")
        return True, None

    def argv(self, ctx: StepContext, exe: str, home_dir: str) -> list[str]:
        # --no-stream: the provider's own usage arrives only in a whole response; streamed,
        # aider prints its local token estimate instead.
        argv = [exe, "--message", _cli.prompt_for(ctx), "--yes-always", "--no-auto-commits", "--no-git",
                "--no-gitignore", "--no-pretty", "--no-fancy-input", "--no-stream", "--no-check-update",
                "--no-show-release-notes", "--no-show-model-warnings", "--analytics-disable",
                "--input-history-file", f"{home_dir}/.aider.input.history",
                "--chat-history-file", f"{home_dir}/.aider.chat.history.md"]
        if ctx.model:
            argv += ["--model", ctx.model]
        if ctx.api_base:
            argv += ["--openai-api-base", ctx.api_base.rstrip("/")]
        return argv

    def step(self, ctx: StepContext) -> StepResult:
        exe = _cli.resolve_executable(BINARY, ctx.env)
        if exe is None:
            return _cli.not_installed(BINARY, INSTALL_HINT)
        env: dict[str, str] = {"NO_COLOR": "1", "AIDER_CHECK_UPDATE": "false", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        secrets: dict[str, str] = {}
        for var in KEY_VARS:
            key, is_secret = _cli.key_for(ctx, var)
            if key is not None:
                _cli.place_key(var, key, is_secret, env, secrets)
        if not secrets and not any(v in env for v in KEY_VARS):
            return StepResult(exit_code=2, error="no model key for agent:aider",
                              error_kind=StepErrorKind.AUTH,
                              summary="run `loopmeter auth set anthropic` (or openai)")
        home = _cli.agent_home(ctx)
        res = _cli.run_cli(ctx, self.argv(ctx, exe, str(home)), env=env, secrets=secrets, home=home, stdin="")
        out = parse_text(res.stdout, ctx, res.exit_code)
        out.exit_code = res.exit_code
        text = res.stdout + "\n" + res.stderr
        kind, stopped = _cli.exec_failure(res)
        if kind:
            out.error_kind, out.stopped_by = kind, stopped
            out.error = f"aider stopped: {res.killed_reason or 'timeout'}"
        elif any(marker in text for marker in AUTH_ERRORS):
            out.error, out.error_kind = _first_line_with(text, AUTH_ERRORS), StepErrorKind.AUTH
        elif res.exit_code != 0:
            out.error = _cli.tail(res.stderr or res.stdout, 500) or f"aider exited {res.exit_code}"
            out.error_kind = StepErrorKind.AGENT
        return _cli.finish(ctx, out)


def _first_line_with(text: str, markers: tuple[str, ...]) -> str:
    for line in text.splitlines():
        if any(m in line for m in markers):
            return line.strip()[:500]
    return "authentication failed"


def _anthropic(model: str | None) -> bool:
    return bool(model) and ("claude" in model.lower() or "anthropic" in model.lower())  # type: ignore[union-attr]


def parse_text(stdout: str, ctx: StepContext, exit_code: int = 0) -> StepResult:
    out = StepResult()
    rows: list[UsageRow] = []
    kept: list[str] = []
    model = ctx.model
    for line in stdout.splitlines():
        banner = BANNER_MODEL.match(line)
        if banner and model is None:
            model = banner.group(1)
        m = TOKENS_LINE.search(line)
        if not m:
            if line.strip():
                kept.append(line)
            continue
        sent = tokens(m.group(1), m.group(2)) or 0
        cache_write = tokens(m.group(3), m.group(4))
        cache_hit = tokens(m.group(5), m.group(6))
        received = tokens(m.group(7), m.group(8))
        non_cached = sent - (cache_write or 0) - (0 if _anthropic(model) else (cache_hit or 0))
        r = _cli.row(ctx, _cli.loop_key(ctx, len(rows) + 1), SOURCE, model=model,
                     provider="anthropic" if _anthropic(model) else None, input_tokens=max(non_cached, 0),
                     cache_write_tokens=cache_write, cache_read_tokens=cache_hit, output_tokens=received)
        price_row(r, default_price_table(), None if m.group(9) is None else float(m.group(9)))
        rows.append(r)
        out.transcript.append({"type": "usage", "line": line.strip()})
    if not rows and exit_code == 0 and kept and not any(a in stdout for a in AUTH_ERRORS):
        rows.append(_cli.unreported_row(ctx, SOURCE, model=model))
    out.usage = rows
    out.summary = _cli.tail("\n".join(kept), 2000)
    out.transcript.insert(0, {"type": "output", "text": _cli.clip("\n".join(kept))})
    return out


def backend() -> AiderBackend:
    return AiderBackend()
