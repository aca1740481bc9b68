"""Claude Code transcripts: `<config dir>/projects/<project slug>/<session id>.jsonl`.

One API response is written as several lines (one per content block) repeating the
same `message.id`, `requestId` and `usage`: the dedup key makes it count once.
Sub-agent lines (`isSidechain`) are real calls with their own ids and are counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from loopmeter.records import UsageRow
from loopmeter.telemetry.ingest.base import JSON_ERRORS, FileContext, Source, as_int, loads, parse_ts, price

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


def _project(ctx: FileContext, cwd: object) -> str | None:
    if isinstance(cwd, str) and cwd:
        return cwd
    return ctx.path.parent.name or None


_REQ = b'"requestId":"'


def _quick_request_id(line: bytes) -> bytes | None:
    """The first `"requestId":"..."` in the raw line, found without parsing it."""
    i = line.find(_REQ)
    if i < 0:
        return None
    j = line.find(b'"', i + len(_REQ))
    return line[i + len(_REQ) : j] if j > 0 else None


def parse(lines: Iterable[bytes], ctx: FileContext) -> Iterator[UsageRow]:
    # Request ids already counted, as raw bytes: a repeated line (one per content block)
    # is skipped before JSON parsing. Only ids confirmed by a full parse are added.
    parsed_ids: set[bytes] = set()
    for line in lines:
        quick = _quick_request_id(line)
        if quick is not None and quick in parsed_ids:
            continue
        try:
            obj = loads(line)
        except JSON_ERRORS:
            ctx.bad_line()
            continue
        if not isinstance(obj, dict):
            ctx.bad_line()
            continue
        message = obj.get("message")
        if not isinstance(message, dict):
            continue
        usage = message.get("usage")
        if not isinstance(usage, dict):
            continue
        model = message.get("model")
        if model == "<synthetic>":
            continue
        request_id = obj.get("requestId")
        message_id = message.get("id")
        if isinstance(request_id, str) and request_id:
            key = f"anthropic-req:{request_id}"
        elif isinstance(message_id, str) and message_id:
            key = f"claude-msg:{message_id}"
        else:
            ctx.bad_line()  # usage that cannot be deduplicated would be counted once per line
            continue
        if quick is not None and isinstance(request_id, str) and quick == request_id.encode():
            parsed_ids.add(quick)
        if key in ctx.seen:
            continue  # another content block of a response already counted
        ctx.seen.add(key)
        ts = parse_ts(obj.get("timestamp"))
        try:
            if ts is None:
                raise ValueError("no timestamp")
            cache = usage.get("cache_creation")
            write_1h = as_int(cache.get("ephemeral_1h_input_tokens")) if isinstance(cache, dict) else None
            row = UsageRow(
                key=key,
                source=SOURCE_TAG,
                ts=ts,
                model=model if isinstance(model, str) else None,
                agent="claude-code",
                provider="anthropic",
                session_id=obj.get("sessionId") if isinstance(obj.get("sessionId"), str) else ctx.path.stem,
                project=_project(ctx, obj.get("cwd")),
                input_tokens=as_int(usage.get("input_tokens")),
                cache_read_tokens=as_int(usage.get("cache_read_input_tokens")),
                cache_write_tokens=as_int(usage.get("cache_creation_input_tokens")),
                cache_write_1h_tokens=write_1h,
                output_tokens=as_int(usage.get("output_tokens")),
                request_id=request_id if isinstance(request_id, str) else None,
            )
            reported = obj.get("costUSD")
            if reported is not None and not isinstance(reported, int | float):
                raise ValueError("bad costUSD")
        except ValueError:
            ctx.bad_line()
            continue
        yield price(row, ctx.price_table, reported)


SOURCE = Source(
    name="claude-code",
    tag=SOURCE_TAG,
    roots=roots,
    files=files,
    parse=parse,
    markers=MARKERS,
    splittable=True,
)
