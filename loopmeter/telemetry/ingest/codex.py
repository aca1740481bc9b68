"""OpenAI Codex CLI rollouts: `$CODEX_HOME/{sessions,archived_sessions}/**/rollout-*.jsonl`.

`token_count` events carry the session's cumulative totals: a call is the difference
from the previous event (`info` is null on rate-limit pings). Codex counts cached
tokens inside `input_tokens` and reasoning inside `output_tokens`; rows store input
as non-cached (input - cached) and cached as cache reads, so totals compare across
tools. The model is the latest `turn_context`'s. Carry-over between reads (previous
totals, model, event count) lives in the cursor's state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from loopmeter.records import UsageRow
from loopmeter.telemetry.ingest.base import JSON_ERRORS, FileContext, Source, as_int, loads, parse_ts, price

SOURCE_TAG = "codex-log"
MARKERS = (b'"token_count"', b'"turn_context"', b'"session_meta"')
_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def roots(env: dict[str, str]) -> list[Path]:
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    base = Path(env["CODEX_HOME"]).expanduser() if env.get("CODEX_HOME") else home / ".codex"
    return [d for d in (base / "sessions", base / "archived_sessions") if d.is_dir()]


def files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".jsonl"):
                yield Path(dirpath) / name


def _counts(usage: Any) -> tuple[int, int, int, int] | None:
    """(input, cached input, output, reasoning) tokens of a usage object."""
    if not isinstance(usage, dict):
        return None
    get = usage.get
    return (as_int(get("input_tokens")), as_int(get("cached_input_tokens")), as_int(get("output_tokens")),
            as_int(get("reasoning_output_tokens")))


def _session_id(ctx: FileContext) -> str:
    found = _UUID.findall(ctx.path.name)
    return found[-1] if found else ctx.path.stem


def parse(lines: Iterable[bytes], ctx: FileContext) -> Iterator[UsageRow]:
    st = ctx.state
    for line in lines:
        try:
            obj = loads(line)
        except JSON_ERRORS:
            ctx.bad_line()
            continue
        if not isinstance(obj, dict):
            ctx.bad_line()
            continue
        kind = obj.get("type")
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            continue
        if kind == "session_meta":
            if isinstance(payload.get("id"), str):
                st["session"] = payload["id"]
            if isinstance(payload.get("cwd"), str):
                st["cwd"] = payload["cwd"]
            continue
        if kind == "turn_context":
            if isinstance(payload.get("model"), str):
                st["model"] = payload["model"]
            if isinstance(payload.get("cwd"), str):
                st["cwd"] = payload["cwd"]
            continue
        if kind != "event_msg" or payload.get("type") != "token_count":
            continue
        info = payload.get("info")
        if info is None:
            continue  # a rate-limit ping
        try:
            if not isinstance(info, dict):
                raise ValueError("info is not an object")
            total = _counts(info.get("total_token_usage"))
            last = _counts(info.get("last_token_usage"))
            ts = parse_ts(obj.get("timestamp"))
            if ts is None:
                raise ValueError("no timestamp")
        except ValueError:
            ctx.bad_line()
            continue
        prev = st.get("total")  # saved in the cursor as {field: tokens}
        delta: tuple[int, ...]
        if total is not None:
            st["total"] = dict(zip(_FIELDS, total, strict=True))
            if prev is None:
                delta = total
            else:
                before = tuple(prev.get(f, 0) for f in _FIELDS)
                if all(t >= b for t, b in zip(total, before, strict=True)):
                    delta = tuple(t - b for t, b in zip(total, before, strict=True))
                else:  # totals went backwards (a new context): trust this call's own figures
                    delta = last or total
        elif last is not None:
            delta = last
        else:
            continue
        n = st.get("n", 0) + 1
        st["n"] = n
        if not any(delta):
            continue  # the same totals repeated
        d_input, d_cached, d_output, d_reasoning = delta
        cached = min(d_cached, d_input)
        session = st.get("session") or _session_id(ctx)
        model = st.get("model")
        row = UsageRow(
            key=f"codex:{session}:{n}",
            source=SOURCE_TAG,
            ts=ts,
            model=model,
            agent="codex",
            provider="openai",
            session_id=session,
            project=st.get("cwd"),
            input_tokens=d_input - cached,
            cache_read_tokens=cached,
            cache_write_tokens=0,
            output_tokens=d_output,
            reasoning_tokens=d_reasoning,
        )
        yield price(row, ctx.price_table)


SOURCE = Source(
    name="codex",
    tag=SOURCE_TAG,
    roots=roots,
    files=files,
    parse=parse,
    markers=MARKERS,
)
