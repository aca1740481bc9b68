"""Shared plumbing for backends that run an outside agent's headless CLI in the sandbox.

Each CLI backend builds its argv and parses its own output; this module finds the
executable, gives the agent a private HOME, hands over only the secrets the policy
names for it, lets the model endpoint through the egress proxy, runs the process
through the sandbox runner and builds usage rows with honest gaps.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loopmeter.agents.base import StepContext, StepResult
from loopmeter.records import ExecResult, UsageRow, utcnow
from loopmeter.telemetry.tokens import MAX_TOKENS
from loopmeter.vocab import CostSource, StepErrorKind

# Handed to an agent whose model server is on loopback: such servers ignore keys,
# and the user's real key must not leak to them.
LOCAL_PLACEHOLDER_KEY = "loopmeter-local-no-key"
TRANSCRIPT_TEXT_LIMIT = 4000
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"}


def actor(agent: str, ctx_actor: str = "") -> str:
    return ctx_actor or f"agent:{agent}"


def resolve_executable(name: str, env: dict[str, str] | None = None) -> str | None:
    """Absolute path of an agent CLI, looked up on the caller's PATH (ctx.env may override it)."""
    path = (env or {}).get("PATH") or os.environ.get("PATH", "")
    found = shutil.which(name, path=path)
    return str(Path(found).absolute()) if found else None


def is_loopback_url(url: str | None) -> bool:
    if not url:
        return False
    host = (urlsplit(url).hostname or "").lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def url_host_port(url: str) -> str:
    """'http://127.0.0.1:8080/v1' -> '127.0.0.1:8080' (default ports filled in)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def agent_home(ctx: StepContext) -> Path:
    """A private HOME per attempt, kept across iterations (and resume) so an agent can pick
    up its session: under the loop's state_dir, else beside the worktree."""
    if ctx.state_dir is not None:
        home = Path(ctx.state_dir) / "home"
    else:
        home = ctx.workdir.parent / f".{ctx.workdir.name}.{ctx.agent}-home"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def home_read(home: Path, rel: str) -> str | None:
    """A file in the agent's HOME, which sandboxed code writes: never through a link."""
    from loopmeter import safefs

    try:
        node = safefs.read(home, rel)
    except (safefs.UnsafePath, OSError):
        return None
    return node.data.decode("utf-8", errors="replace") if node is not None and node.kind == "file" else None


def home_write(home: Path, rel: str, text: str) -> None:
    """Write a file in the agent's HOME by rename: a link planted there is replaced, its target untouched."""
    from loopmeter import safefs

    safefs.write(home, rel, safefs.Node("file", data=text.encode(), mode=0o600))


def home_files(home: Path, rel_dir: str, name: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(relative path, text) of the regular files under HOME/rel_dir whose name passes `name`;
    links are neither followed nor read."""
    from loopmeter import safefs

    out = []
    try:
        for rel, kind in safefs.walk(home, rel_dir):
            if kind == "file" and name(rel.rsplit("/", 1)[-1]):
                text = home_read(home, rel)
                if text is not None:
                    out.append((rel, text))
    except (safefs.UnsafePath, OSError):
        pass
    return out


def key_for(ctx: StepContext, var: str, *, honor_api_base: bool = True) -> tuple[str | None, bool]:
    """(value, is_secret) for an API-key variable.

    A loopback api_base gets a placeholder (a local server needs no key). Otherwise
    the real key, only when the policy names it for this agent."""
    if honor_api_base and is_loopback_url(ctx.api_base):
        return LOCAL_PLACEHOLDER_KEY, False
    policy = ctx.policy
    if policy is None or var not in policy.secrets_for(actor(ctx.agent, ctx.actor)):
        return None, True
    from loopmeter.secrets import PROVIDERS, get_key

    provider = next((p for p, v in PROVIDERS.items() if v == var), None)
    if provider is None:
        value = os.environ.get(var)
        return value, True
    value, _ = get_key(provider)
    return value, True


def have_key(var: str, provider: str) -> bool:
    from loopmeter.secrets import get_key

    try:
        value, _ = get_key(provider)
    except Exception:
        value = os.environ.get(var)
    return bool(value)


def key_hint(var: str, provider: str) -> str:
    return (f"no {provider} key: run `loopmeter auth set {provider}` or set {var} "
            "(not needed with --api-base pointing at a local model server)")


def no_key(agent: str, var: str, provider: str) -> StepResult:
    """The step's answer when the policy hands this agent no key (exit 2, auth, with the fix)."""
    return StepResult(exit_code=2, error=f"no {var} for agent:{agent}", error_kind=StepErrorKind.AUTH,
                      summary=key_hint(var, provider))


def place_key(var: str, key: str, is_secret: bool, env: dict[str, str], secrets: dict[str, str]) -> None:
    """A real key travels as a sandbox secret; a local server's placeholder as a plain variable."""
    if is_secret:
        secrets[var] = key
    else:
        env[var] = key


def check_available(binary: str, install_hint: str, key_var: str, provider: str,
                    api_base: str | None) -> tuple[bool, str | None]:
    """A backend's `available()`: its CLI on PATH, and a key unless a loopback server needs none."""
    if resolve_executable(binary) is None:
        return False, install_hint
    if not is_loopback_url(api_base) and not have_key(key_var, provider):
        return False, key_hint(key_var, provider)
    return True, None


def run_cli(
    ctx: StepContext,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    home: Path | None = None,
    stdin: str | None = None,
    extra_ro_binds: Iterable[Path] = (),
    watch: Callable[[str, str], str | None] | None = None,
) -> ExecResult:
    """Run the agent's CLI through the sandbox runner with the worktree as its directory.

    `watch(stream, line)` sees output as it arrives; a reason it returns (e.g. "auth" when
    the agent keeps retrying a rejected key) stops the agent and becomes `killed_reason`."""
    if ctx.sandbox is None:
        raise ValueError("StepContext.sandbox is required to run an agent CLI")
    extra_allow: list[str] = []
    if ctx.api_base:
        extra_allow.append(url_host_port(ctx.api_base))
    binds = [*executable_dirs(argv[0]), *extra_ro_binds]
    merged_env = {**ctx.env, **(env or {})}
    merged_env.pop("PATH", None)  # the host PATH found the binary; inside, the sandbox's own PATH applies
    stop = threading.Event()
    done = threading.Event()
    reasons: list[str] = []

    def on_output(stream: str, line: str) -> None:
        if watch is None or stop.is_set():
            return
        reason = watch(stream, line)
        if reason:
            reasons.append(reason)
            stop.set()

    def on_denial(denial: dict[str, str]) -> None:
        # the model endpoint refused or unreachable: the agent would only retry it (for minutes)
        if denial["target"] in extra_allow and not stop.is_set():
            reasons.append("network")
            stop.set()

    def mirror_cancel() -> None:
        while not done.wait(0.1):
            if ctx.cancel is not None and ctx.cancel.is_set():
                stop.set()
                return

    if ctx.cancel is not None:
        threading.Thread(target=mirror_cancel, daemon=True).start()
    try:
        res: ExecResult = ctx.sandbox.run(
            list(argv),
            workdir=ctx.workdir,
            policy=ctx.policy,
            role="agent",
            actor=actor(ctx.agent, ctx.actor),
            env=merged_env,
            secrets=secrets or None,
            timeout_s=ctx.timeout_s,
            run_id=ctx.run_id,
            attempt_id=ctx.attempt_id,
            extra_allow=extra_allow,
            home=home,
            extra_ro_binds=[b for b in binds if str(b) not in ("/", "")],
            stdin=stdin,
            cancel=stop,
            on_output=on_output,
            on_denial=on_denial,
        )
    finally:
        done.set()
    if reasons:
        res.killed_reason = reasons[0]
    return res


def executable_dirs(exe: str) -> list[Path]:
    """What must be visible in the sandbox to run `exe`: its directory, the whole
    node_modules tree of an npm binary, the whole virtualenv of a pip/pipx one."""
    dirs = [Path(exe).parent]
    real = Path(os.path.realpath(exe))
    if (real.parent.parent / "pyvenv.cfg").is_file():
        dirs.append(real.parent.parent)
    elif "node_modules" in real.parts:
        i = real.parts.index("node_modules")
        dirs.append(Path(*real.parts[: i + 1]))
    elif real.parent != dirs[0]:
        dirs.append(real.parent)
    return list(dict.fromkeys(dirs))


PROXY_DENIAL = "egress proxy denied"  # what loopmeter's proxy answers (HTTP 403) when it refuses a host


def error_kind_for(message: str, status: int | None = None) -> StepErrorKind:
    """What an agent's own error message and HTTP status say went wrong: auth / infra (the
    sandbox refused or could not reach the endpoint) / agent."""
    low = message.lower()
    if PROXY_DENIAL in low:
        return StepErrorKind.INFRA
    if status in (401, 403) or "api key" in low or "unauthorized" in low or "authenticat" in low:
        return StepErrorKind.AUTH
    return StepErrorKind.AGENT


def not_installed(binary: str, hint: str) -> StepResult:
    return StepResult(exit_code=127, error=f"{binary} is not installed (not on PATH)",
                      error_kind=StepErrorKind.NOT_INSTALLED,
                      summary=hint)


def exec_failure(res: ExecResult) -> tuple[StepErrorKind | None, str | None]:
    """(error_kind, stopped_by) for a process the runner stopped: timeout or cancellation."""
    if res.timed_out or res.killed_reason == "timeout":
        return StepErrorKind.TIMEOUT, "max_minutes"
    if res.killed_reason == "cancelled":
        return StepErrorKind.BUDGET, "cancelled"
    if res.killed_reason == "auth":
        return StepErrorKind.AUTH, None
    if res.killed_reason == "network":
        return StepErrorKind.INFRA, None
    if res.killed_reason:
        return StepErrorKind.BUDGET, res.killed_reason
    return None, None


def finish(ctx: StepContext, out: StepResult, bad_lines: int = 0) -> StepResult:
    """Note output lines that were not JSON, then hand each usage row to ctx.on_usage."""
    if bad_lines:
        out.transcript.append({"type": "loopmeter.skipped_lines", "count": bad_lines})
    if ctx.on_usage:
        for r in out.usage:
            ctx.on_usage(r)
    return out


def unreported_row(ctx: StepContext, source: str, **fields: Any) -> UsageRow:
    """The agent ran and made model calls but reported no usage: NULL tokens, unpriced."""
    fields.setdefault("model", ctx.model)
    return row(ctx, loop_key(ctx, 1), source, cost_source=CostSource.UNPRICED, **fields)


def loop_key(ctx: StepContext, n: int) -> str:
    return f"loop:{ctx.attempt_id}:{ctx.iteration}:{n}"


def count(value: Any) -> int | None:
    """A token count from an agent's JSON output (written in the sandbox: hostile): a whole number
    from 0 to tokens.MAX_TOKENS, else not a count (None: the call's counts are unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_TOKENS:
        return None
    return int(value) if value == int(value) else None


def row(ctx: StepContext, key: str, source: str, **fields: Any) -> UsageRow:
    base: dict[str, Any] = dict(
        key=key, source=source, ts=utcnow(), agent=ctx.agent, run_id=ctx.run_id, attempt_id=ctx.attempt_id,
        project=ctx.project, user=ctx.user,
    )
    base.update(fields)
    return UsageRow(**base)


def json_lines(text: str) -> tuple[list[dict[str, Any]], int]:
    """JSON objects, one per line; (objects, number of lines that were not JSON objects)."""
    out: list[dict[str, Any]] = []
    bad = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        else:
            bad += 1
    return out, bad


def json_document(text: str) -> dict[str, Any] | None:
    """The JSON object in a CLI's output, tolerating log lines printed before it."""
    text = text.strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except json.JSONDecodeError:
        pass
    # A pretty-printed object starts at a line beginning with "{".
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("{"):
            try:
                obj = json.loads("\n".join(lines[i:]))
                if isinstance(obj, dict):
                    return obj
            except json.JSONDecodeError:
                continue
    return None


def clip(obj: Any, limit: int = TRANSCRIPT_TEXT_LIMIT) -> Any:
    """A copy with long strings shortened, so transcripts stay small."""
    if isinstance(obj, str):
        return obj if len(obj) <= limit else obj[:limit] + f"... [{len(obj) - limit} more chars]"
    if isinstance(obj, dict):
        return {k: clip(v, limit) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clip(v, limit) for v in obj]
    return obj


def tail(text: str, n: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


FEEDBACK_LIMIT = 8000  # the prompt travels in argv, where one argument is capped at 128 KiB


def prompt_for(ctx: StepContext) -> str:
    """The instruction, plus the tail of the previous check's failure on later iterations."""
    if ctx.iteration > 1 and ctx.feedback:
        return (f"{ctx.instruction}\n\nThe check command failed after your last attempt. "
                f"Its output ends with:\n\n{tail(ctx.feedback, FEEDBACK_LIMIT)}\n\n"
                "Fix the code so the check passes.")
    return ctx.instruction
