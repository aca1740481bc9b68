"""Gemini CLI chat recordings: `<data dir>/tmp/<project hash>/chats/session-*.json[l]`.

A `.json` file is one document `{sessionId, projectHash, messages: [...]}` rewritten
as the chat goes on, so it is re-read whole when it changes (keys deduplicate); a
`.jsonl` file holds one record per line. Records with `"type": "gemini"` carry
`model` and `tokens {input, output, cached, thoughts, tool, total}`, where `input`
is the whole prompt (cached included) and `output` excludes the thoughts. Rows store
input as non-cached (input - cached + tool prompt) and output with thoughts included,
thoughts also as reasoning tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from loopmeter.records import UsageParams
from loopmeter.telemetry import tokens
from loopmeter.telemetry.ingest.base import (
    FileContext,
    Source,
    as_int,
    json_object,
    ts_text,
    usage_params,
)

SOURCE_TAG = "gemini-log"
MARKERS = (b'"tokens"', b'"sessionId"')


def roots(env: dict[str, str]) -> list[Path]:
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    base = Path(env["GEMINI_DATA_DIR"]).expanduser() if env.get("GEMINI_DATA_DIR") else home / ".gemini"
    tmp = base / "tmp"
    return [tmp if tmp.is_dir() else base] if base.is_dir() else []


def files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        if os.path.basename(dirpath) != "chats":
            continue
        for name in names:
            if name.startswith("session-") and (name.endswith(".json") or name.endswith(".jsonl")):
                yield Path(dirpath) / name


def _message(msg: dict[str, Any], ctx: FileContext) -> UsageParams | None:
    if msg.get("type") != "gemini":
        return None
    raw = msg.get("tokens")
    if not isinstance(raw, dict):
        return None
    msg_id = msg.get("id")
    ts = ts_text(msg.get("timestamp"))
    if not isinstance(msg_id, str) or ts is None:
        raise ValueError("message without id or timestamp")
    get = raw.get  # counts that are not integers, or contradict each other, raise ValueError: a malformed line
    counts = tokens.gemini(as_int(get("input")), as_int(get("cached")), as_int(get("output")), as_int(get("thoughts")),
                           as_int(get("tool")))
    session = ctx.state.get("session") or ctx.path.stem
    ctx.saw(session, ts, None, None)  # a recording names its project by a hash only: no cwd, no branch
    model = msg.get("model")
    return usage_params(
        ctx, key=f"gemini:{session}:{msg_id}", ts=ts, model=model if isinstance(model, str) else None,
        session_id=session, project=ctx.state.get("project"), tokens=counts)


def _header(obj: dict[str, Any], ctx: FileContext) -> None:
    if isinstance(obj.get("sessionId"), str):
        ctx.state["session"] = obj["sessionId"]
    if isinstance(obj.get("projectHash"), str):
        ctx.state["project"] = obj["projectHash"]


def parse(lines: Iterable[bytes | memoryview], ctx: FileContext) -> Iterator[UsageParams]:
    for line in lines:
        obj = json_object(line, ctx)
        if obj is None:
            continue
        if "type" not in obj:
            _header(obj, ctx)
        listed = obj.get("messages")
        messages: list[Any] = listed if isinstance(listed, list) else [obj]
        for msg in messages:
            if not isinstance(msg, dict):
                ctx.bad_line()
                continue
            try:
                row = _message(msg, ctx)
            except ValueError:
                ctx.bad_line()
                continue
            if row is not None:
                yield row


SOURCE = Source(
    name="gemini",
    tag=SOURCE_TAG,
    agent="gemini",
    provider="gemini",
    roots=roots,
    files=files,
    parse=parse,
    markers=MARKERS,
    whole_file_suffix=".json",
)
