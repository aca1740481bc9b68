"""Claude Code transcripts: `<config dir>/projects/<project slug>/<session id>.jsonl`.

One API response is written as several lines (one per content block) repeating the
same `message.id`, `requestId` and `usage`: the dedup key makes it count once.
Sub-agent lines (`isSidechain`) are real calls with their own ids and are counted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from loopmeter.records import UsageParams
from loopmeter.telemetry import tokens
from loopmeter.telemetry.ingest.base import (
    STRUCT_ERRORS,
    FileContext,
    Source,
    Tokens,
    as_int,
    json_object,
    str_or_none,
    ts_text,
    usage_params,
)

SOURCE_TAG = "claude-code-log"
MARKERS = (b'"usage"',)


def roots(env: dict[str, str]) -> list[Path]:
    """`projects/` under each CLAUDE_CONFIG_DIR entry, else ~/.config/claude and ~/.claude."""
    configured = [p.strip() for p in env.get("CLAUDE_CONFIG_DIR", "").split(",") if p.strip()]
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    bases = [Path(p).expanduser() for p in configured] or [home / ".config" / "claude", home / ".claude"]
    out = []
    for base in bases:
        projects = base if base.name == "projects" else base / "projects"
        if projects.is_dir():
            out.append(projects)
    return out


def files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".jsonl"):
                yield Path(dirpath) / name


# The fields a line's usage is made of, decoded without building the rest of the line
# (message content, tool results). A line that does not fit these types goes through
# the generic decoder and the checks of `_generic`, which decide what it is worth.
class _CacheCreation(msgspec.Struct):
    ephemeral_1h_input_tokens: Tokens | None = None


class _Usage(msgspec.Struct):
    input_tokens: Tokens | None = None
    cache_creation_input_tokens: Tokens | None = None
    cache_read_input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cache_creation: _CacheCreation | None = None


class _Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _Line(msgspec.Struct):
    timestamp: str | None = None
    sessionId: str | None = None  # noqa: N815 - the log's own name
    cwd: str | None = None
    gitBranch: str | None = None  # noqa: N815
    requestId: str | None = None  # noqa: N815
    costUSD: float | None = None  # noqa: N815
    message: _Message | None = None


_decode_line = msgspec.json.Decoder(_Line).decode

# What a usage line holds: (timestamp, sessionId, cwd, gitBranch, requestId, costUSD, message id,
# model, input, cache write, cache read, output, 1-hour cache write); tokens already checked.
_Fields = tuple[Any, Any, Any, Any, Any, Any, Any, Any, int, int, int, int, "int | None"]


def _typed(line: bytes | memoryview) -> _Fields | None:
    """The usage fields of a line that fits the expected types (None: not a usage line);
    raises a msgspec error when it does not fit."""
    obj = _decode_line(line)
    message = obj.message
    if message is None:
        return None
    usage = message.usage
    if usage is None:
        return None
    cache = usage.cache_creation
    return (obj.timestamp, obj.sessionId, obj.cwd, obj.gitBranch, obj.requestId, obj.costUSD, message.id,
            message.model,
            usage.input_tokens or 0, usage.cache_creation_input_tokens or 0, usage.cache_read_input_tokens or 0,
            usage.output_tokens or 0, None if cache is None else cache.ephemeral_1h_input_tokens or 0)


def _generic(line: bytes | memoryview, ctx: FileContext) -> _Fields | None:
    """The same from any JSON line: unexpected types make it malformed (counted) or not a
    usage line, as they would in the agent's own reading."""
    obj = json_object(line, ctx)
    if obj is None:
        return None
    message = obj.get("message")
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    if not isinstance(usage, dict):
        return None
    try:
        cache = usage.get("cache_creation")
        reported = obj.get("costUSD")
        if reported is not None and (isinstance(reported, bool) or not isinstance(reported, int | float)):
            raise ValueError("bad costUSD")
        reported = None if reported is None else float(reported)
        model = message.get("model")
        return (obj.get("timestamp"), str_or_none(obj.get("sessionId")), str_or_none(obj.get("cwd")),
                str_or_none(obj.get("gitBranch")), str_or_none(obj.get("requestId")),
                reported, str_or_none(message.get("id")), str_or_none(model) if model != "<synthetic>" else model,
                as_int(usage.get("input_tokens")), as_int(usage.get("cache_creation_input_tokens")),
                as_int(usage.get("cache_read_input_tokens")), as_int(usage.get("output_tokens")),
                as_int(cache.get("ephemeral_1h_input_tokens")) if isinstance(cache, dict) else None)
    except ValueError:
        ctx.bad_line()
        return None


_REQ = re.compile(rb'"requestId":"([^"]*)"')


def _quick_request_id(line: bytes | memoryview) -> bytes | None:
    """The first `"requestId":"..."` in the raw line, found without parsing it."""
    m = _REQ.search(line)
    return None if m is None else m.group(1)


def parse(lines: Iterable[bytes | memoryview], ctx: FileContext) -> Iterator[UsageParams]:
    # Request ids already counted, as raw bytes: a repeated line (one per content block)
    # is skipped before JSON parsing. Only ids confirmed by a full parse are added.
    parsed_ids: set[bytes] = set()
    seen = ctx.seen
    default_session, default_project = ctx.path.stem, ctx.path.parent.name or None
    for line in lines:
        quick = _quick_request_id(line)
        if quick is not None and quick in parsed_ids:
            continue
        try:
            fields = _typed(line)
        except STRUCT_ERRORS:
            fields = _generic(line, ctx)
        if fields is None:
            continue
        ts, session, cwd, branch, request_id, reported, message_id, model, inp, cw, cr, out, cw1h = fields
        if model == "<synthetic>":
            continue
        if request_id:
            key = f"anthropic-req:{request_id}"
        elif message_id:
            key = f"claude-msg:{message_id}"
        else:
            ctx.bad_line()  # usage that cannot be deduplicated would be counted once per line
            continue
        if quick is not None and request_id is not None and quick == request_id.encode():
            parsed_ids.add(quick)
        if key in seen:
            continue  # another content block of a response already counted
        seen.add(key)
        when = ts_text(ts)
        if when is None:
            ctx.bad_line()
            continue
        session = session or default_session
        ctx.saw(session, when, cwd, branch)
        yield usage_params(ctx, key=key, ts=when, model=model, session_id=session, project=cwd or default_project,
                           tokens=tokens.anthropic(inp, cr, cw, out, cw1h), request_id=request_id, reported=reported)


SOURCE = Source(
    name="claude-code",
    tag=SOURCE_TAG,
    agent="claude-code",
    provider="anthropic",
    roots=roots,
    files=files,
    parse=parse,
    markers=MARKERS,
    splittable=True,
)
