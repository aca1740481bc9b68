"""`loopmeter collect`: receive the agents' own OpenTelemetry export (OTLP/HTTP).

Usage events become usage rows (deduplicated against log-ingested rows by request
id), traces become spans, metrics are counted. `--print-env AGENT` prints what to set
in Claude Code, Codex or Gemini CLI so they send here.

`--json` prints the final counts when stopping, with the keys: requests, bad_requests,
overloaded, log_records, metric_points, spans_received, usage_accepted, usage_new,
usage_duplicate, spans_stored, rejected_records, write_errors, dead_lettered (records the
store refused, set aside in $LOOPMETER_HOME/collect-dead-letter.jsonl), events {name: count}.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from typing import Annotated

import typer

from loopmeter.errors import LoopmeterError

AGENTS = ("claude-code", "codex", "gemini")


def register(root: typer.Typer) -> None:
    root.command("collect")(collect)


def _endpoint(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: agents elsewhere need a real name
        host = socket.getfqdn() or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def agent_env(agent: str, host: str, port: int) -> str:
    """What to set in AGENT so its telemetry reaches a collector at host:port."""
    base = _endpoint(host, port)
    if agent == "claude-code":
        return "\n".join([
            "# Claude Code: set in the shell that starts claude (or the \"env\" block of ~/.claude/settings.json)",
            "export CLAUDE_CODE_ENABLE_TELEMETRY=1",
            "export OTEL_LOGS_EXPORTER=otlp",
            "export OTEL_METRICS_EXPORTER=otlp",
            "export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
            f"export OTEL_EXPORTER_OTLP_ENDPOINT={base}",
            "export OTEL_LOGS_EXPORT_INTERVAL=5000",
        ]) + "\n"
    if agent == "gemini":
        return "\n".join([
            "# Gemini CLI: set in the shell that starts gemini (or \"telemetry\" in ~/.gemini/settings.json)",
            "export GEMINI_TELEMETRY_ENABLED=true",
            "export GEMINI_TELEMETRY_TARGET=local",
            f"export GEMINI_TELEMETRY_OTLP_ENDPOINT={base}",
            "export GEMINI_TELEMETRY_OTLP_PROTOCOL=http",
            "export GEMINI_TELEMETRY_LOG_PROMPTS=false",
        ]) + "\n"
    if agent == "codex":
        return "\n".join([
            "# Codex: add to ~/.codex/config.toml (or $CODEX_HOME/config.toml), replacing any [otel] table there",
            "[otel]",
            'environment = "dev"',
            "log_user_prompt = false",
            "",
            '[otel.exporter."otlp-http"]',
            f'endpoint = "{base}/v1/logs"',
            'protocol = "binary"',
            "",
            '[otel.trace_exporter."otlp-http"]',
            f'endpoint = "{base}/v1/traces"',
            'protocol = "binary"',
        ]) + "\n"
    raise LoopmeterError(f"unknown agent {agent!r} for --print-env", hint="one of: " + ", ".join(AGENTS))


def collect(
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Loopback unless you say otherwise.")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option("--port", help="Port to listen on (OTLP/HTTP's usual 4318; 0 = any free).")] = (
        4318),
    print_env: Annotated[str | None, typer.Option(
        "--print-env", metavar="AGENT",
        help="Print what to set in claude-code, codex or gemini to send telemetry here, then exit.")] = None,
    queue_size: Annotated[int, typer.Option(
        "--queue-size", min=1, help="Requests held between HTTP and the writer before answering 503.")] = 1024,
    memory_budget: Annotated[int, typer.Option(
        "--memory-budget", min=16, metavar="MIB",
        help="Memory for requests at once (bodies, decoding, rows waiting for the store), in MiB; "
             "beyond it requests get 503 + Retry-After.")] = 256,
    json_out: Annotated[bool, typer.Option("--json", help="Print the final counts as JSON when stopping.")] = False,
) -> None:
    """Receive OTLP/HTTP (protobuf or JSON) on /v1/logs, /v1/metrics, /v1/traces until Ctrl-C or SIGTERM."""
    if print_env is not None:
        typer.echo(agent_env(print_env, host, port), nl=False)
        return

    from loopmeter.config import load_settings, mask_url
    from loopmeter.store import open_store
    from loopmeter.telemetry.receiver import Receiver, is_loopback, stderr_log

    tty = sys.stderr.isatty()
    settings = load_settings()
    store = open_store(settings.db_url)
    receiver = Receiver(store, host, port, queue_size=queue_size, memory_budget=memory_budget << 20,
                        log=stderr_log, summary_every_s=60.0 if tty else None, spill_dir=settings.home)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bound = receiver.start()
    if not is_loopback(host):
        stderr_log(f"warning: listening on {host}:{bound}, reachable from other machines and without "
                   "authentication; prefer loopback behind an OpenTelemetry Collector (see docs/deployment.md)")
    if tty:
        stderr_log(f"loopmeter collect: listening on {receiver.url} (/v1/logs /v1/metrics /v1/traces), "
                   f"writing to {mask_url(settings.db_url)}; Ctrl-C to stop")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stats = receiver.stop()
        store.dispose()
    if json_out:
        typer.echo(json.dumps(stats, sort_keys=True))
    elif tty:
        stderr_log(f"loopmeter collect: stopped; {stats['usage_new']} new usage rows, {stats['spans_stored']} spans, "
                   f"{stats['bad_requests']} bad requests, {stats['overloaded']} answered busy, "
                   f"{stats['dead_lettered']} records set aside")
    if receiver.unsaved is not None:
        raise LoopmeterError(f"the store did not take everything received; the rest is in {receiver.unsaved}",
                             hint="check LOOPMETER_DB_URL, then load the file again", exit_code=1)
